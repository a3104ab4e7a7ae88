"""Progress as a user sees it: a redrawn bar in a terminal (one summary line left behind), log lines anywhere else,
and in-epoch rows of a Train run shown until that evaluation's line arrives."""
from __future__ import annotations

import queue

from autosrh_ray import rate_line
from autosrh_ray.distributed import progress
from autosrh_ray.distributed.progress import LINE, SUMMARY, LiveLines, RowsChannel
from autosrh_ray.rate_line import Progress


def test_a_terminal_gets_a_redrawn_bar_and_one_final_line(capsys):
    lines: list[str] = []
    bar = Progress("prepare: encode", 1000, lines.append, bar=True)
    bar.update(400)
    bar.update(1000)
    drawn = capsys.readouterr().out
    assert "\r" in drawn and "[prepare: encode]" in drawn and "rows" in drawn  # redrawn in place, not new lines
    assert len(lines) == 1 and "1,000/1,000 rows (100%)" in lines[0]  # what stays in the scrollback


def test_without_a_terminal_progress_is_log_lines_only(capsys):
    lines: list[str] = []
    line = Progress("prepare: statistics", 10, lines.append, bar=False, every=0.0)
    line.update(5)
    line.update(10)
    assert capsys.readouterr().out == ""
    assert [entry.split(" (")[0] for entry in lines] == ["[prepare: statistics] 5/10 rows",
                                                         "[prepare: statistics] 10/10 rows"]
    quiet: list[str] = []
    epoch = Progress("search epoch 0", 10, quiet.append, bar=False, final_line=False)
    epoch.update(10)  # an evaluation's own line follows: no second line for it
    assert quiet == []


class FakeQueue:
    """The Ray queue's methods LiveLines uses, in process."""

    def __init__(self):
        self.items: queue.Queue = queue.Queue()

    def put_nowait(self, item):
        self.items.put_nowait(item)

    def qsize(self) -> int:
        return self.items.qsize()

    def get_nowait_batch(self, n: int) -> list:
        return [self.items.get_nowait() for _ in range(n)]

    def shutdown(self) -> None:
        pass


def test_rows_of_an_epoch_show_as_a_bar_until_its_line_arrives(monkeypatch, capsys):
    monkeypatch.setattr(progress, "TICK_SECONDS", 0.0)
    monkeypatch.setattr(rate_line, "interactive", lambda: True)
    shown: list[str] = []
    fake = FakeQueue()
    live = LiveLines(shown.append, queue=fake)
    try:
        # a run's two phases: the search, then (pruned in the same run) the retrain, each labelled as its own
        channel: RowsChannel = live.rows_channel(("search", "retrain cr10"), period_rows=(1000, 500))
        ticker = channel.ticker(epoch=2)  # rank 0's side
        ticker.tick(250)
        ticker.tick(600)
        live.flush()
        assert "search" in live._progress and live._progress["search"][0] == 2
        assert "[search epoch 2]" in capsys.readouterr().out
        fake.put_nowait((LINE, "search", "[search] epoch 2: valid auc=0.7"))
        live.flush()
        assert shown == ["[search] epoch 2: valid auc=0.7"] and live._progress == {}  # the bar made way for it
        retrain = channel.ticker(epoch=0, phase=1)
        retrain.tick(100)
        live.flush()
        assert live._progress["retrain cr10"][0] == 0 and live._progress["retrain cr10"][1].total == 500
    finally:
        live.close()


def test_epoch_lines_name_the_phase_of_the_run_they_come_from():
    from autosrh_ray.distributed.progress import _callback_class

    fake = FakeQueue()
    lines = _callback_class()(fake, ("search", "retrain cr10"))
    lines.after_report(None, [{"epoch": 3, "phase": 0, "valid_auc": 0.7}], None)
    ended = {"first_stop_reason": "patience", "first_epochs": 3, "first_steps": 30, "first_seconds": 1.25,
             "first_best_epoch": 1}
    lines.after_report(None, [{"epoch": 1, "phase": 1, "valid_auc": 0.75, **ended}], None)
    lines.after_report(None, [{"epoch": 2, "phase": 1, "valid_auc": 0.76}], None)
    lines.after_report(None, [{"epoch": 2, "phase": 1, "valid_auc": 0.76, "replayed": 1}], None)
    got = fake.get_nowait_batch(fake.qsize())
    assert [(kind, label, line.split(":")[0]) for kind, label, line in got] == [
        (LINE, "search", "[search] epoch 2"),
        (SUMMARY, "search", "[search] stopped by patience after 3 evaluations (30 steps, 1.2 s); best at evaluation 1"),
        (LINE, "retrain cr10", "[retrain cr10] epoch 0"), (LINE, "retrain cr10", "[retrain cr10] epoch 1")]
    assert "first" not in got[2][2]  # the summary's numbers are not shown as the retrain's metrics
    live = LiveLines(lambda _: None, queue=fake)
    for item in got:
        fake.put_nowait(item)
    live.close()
    assert live.summarised == {"search"}


def test_a_node_lost_or_joined_while_the_run_goes_is_one_line_each():
    from autosrh_ray.distributed.progress import NodeWatch

    def node(node_id: str, cpus: float) -> dict:
        return {"NodeID": node_id, "NodeManagerAddress": "10.0.0.9", "Resources": {"CPU": cpus}}

    cluster = [node("head0000ff", 1), node("work1111ff", 1), node("work2222ff", 1)]
    lines: list[str] = []
    watch = NodeWatch(lines.append, every_s=0, nodes=lambda: list(cluster))
    watch.poll()
    assert lines == []
    cluster[1:2] = []  # a worker node lost
    watch.poll()
    watch.poll()
    assert len(lines) == 1 and lines[0].startswith("[ray] lost node 10.0.0.9 (work1111)") and "checkpoint" in lines[0]
    cluster.append(node("work3333ff", 4))
    watch.poll()
    assert lines[1:] == ["[ray] node 10.0.0.9 (work3333) joined (4 CPUs)"]


def test_a_resumed_stage_shows_the_evaluations_its_checkpoint_holds_that_this_terminal_has_not():
    """After a re-run (a new driver) every evaluation the checkpoint holds is shown; after Ray Train restarted
    the workers of this run (a lost node), only the "resumed" line: those lines are on the screen already."""
    history = [{"auc": 0.70 + i / 100, "train_loss": 0.5} for i in range(3)]
    for printed_before in (0, 3):
        fake, shown = FakeQueue(), []
        live = LiveLines(shown.append, queue=fake)
        channel = live.rows_channel(("search",), period_rows=(1000,))
        for i in range(printed_before):
            fake.put_nowait((LINE, "search", f"[search] epoch {i}: valid auc={0.7 + i / 100:.5f}"))
        channel.resumed(0, history, 30)
        live.close()
        resumed = [line for line in shown if "resumed" in line]
        assert len(resumed) == 1 and resumed[0].startswith("[search] resumed from its checkpoint after evaluation 3 "
                                                           "(30 steps)")
        epochs = [line.split(":")[0] for line in shown if "] epoch " in line]
        assert epochs == ["[search] epoch 0", "[search] epoch 1", "[search] epoch 2"]  # each once, in order
        assert shown.index(resumed[0]) == (printed_before if printed_before else 0)
