"""Live progress of Ray Train runs in the driver's output (a terminal, or ``ray job logs``).

Ray Train calls its callbacks in the run's controller actor, not in the driver, and worker output is not
forwarded (``ray.verbose: false``). So :class:`EpochLines`, a Train callback, formats each evaluation's report
as it arrives and puts the line on a small Ray queue (an actor holding no CPU); rank 0 of the Train run puts
its rows done within the evaluation period there too (:class:`RowTicker`, at most one message a second).
:class:`LiveLines` drains that queue in a driver thread: lines are printed at once — while the stage runs, not
when its Train run ends — and rows feed a :class:`~autosrh_ray.rate_line.Progress` per stage (a bar with rows/s
and ETA in a terminal, a line every 30 s elsewhere). The queue lives on the driver's node (a worker node's loss
never takes it along); a stage restored from its checkpoint says so (:meth:`RowsChannel.resumed`), and the same
thread says when the cluster loses or gains a node (:class:`NodeWatch`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..logs import Log
from ..methods.graph import epoch_line, summary_line
from ..rate_line import Progress
from ..runtime import on_driver_node
from ..supervise import beat
from .shared_paths import alive_nodes

POLL_SECONDS = 0.25
TICK_SECONDS = 1.0
LINE, ROWS, SUMMARY, RESUMED = "line", "rows", "summary", "resumed"


@dataclass(frozen=True)
class RowsChannel:
    """Where rank 0 sends its rows done: the queue, and per phase of the run (its stage, then a retrain after
    pruning in the same run) the stage's label and the rows of an evaluation period."""

    queue: Any
    labels: tuple[str, ...]
    period_rows: tuple[int, ...]

    def ticker(self, epoch: int, phase: int = 0) -> "RowTicker":
        return RowTicker(self.queue, self.labels[phase], epoch, self.period_rows[phase])

    def resumed(self, phase: int, history: list[dict], step: int) -> None:
        """Rank 0's side on a restore: where the phase resumes, and the epoch lines of the evaluations its
        checkpoint holds — the driver prints those it has not printed (all of them after a re-run: the interrupted
        run's terminal may not have shown them; none after Ray Train restarted the workers of this run)."""
        label = self.labels[phase]
        header = f"[{label}] resumed from its checkpoint after evaluation {len(history)} ({step:,} steps)"
        try:
            self.queue.put_nowait((RESUMED, label, header,
                                   [epoch_line(label, i, metrics) for i, metrics in enumerate(history)]))
        except Exception:  # the driver is gone or its queue is full: progress is not worth failing a run for
            pass


class RowTicker:
    """Rank 0's side: ``tick(done)`` sends ``(rows, label, epoch, done, total)`` at most every second."""

    def __init__(self, queue: Any, label: str, epoch: int, total: int):
        self.queue, self.label, self.epoch, self.total = queue, label, epoch, total
        self.last = time.perf_counter()

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < TICK_SECONDS:
            return
        self.last = now
        try:
            self.queue.put_nowait((ROWS, self.label, self.epoch, done, self.total))
        except Exception:  # the driver is gone or its queue is full: progress is not worth failing a run for
            pass


def _unflattened(metrics: dict) -> dict:
    """A report's metrics as the history keeps them (``valid_auc`` → ``auc``), counters left out."""
    return {k.removeprefix("valid_"): v for k, v in metrics.items()
            if k not in ("epoch", "step", "best_epoch", "phase", "resumed_from_step", "replayed")
            and not k.startswith("first_")}


def _epoch_of(line: str) -> str:
    """``[search] epoch 3`` of an epoch line."""
    return line.split(":", 1)[0]


def _callback_class():
    from ray.train import UserCallback

    class EpochLines(UserCallback):
        """Puts ``[stage] epoch N: …`` on ``queue`` after every report of rank 0 (in the Train controller);
        ``stages``: the label of each phase of the run (its stage, then a retrain in the same run)."""

        def __init__(self, queue, stages: tuple[str, ...]):
            self.queue, self.stages = queue, stages

        def after_report(self, run_context, metrics, checkpoint) -> None:
            m = metrics[0] if metrics else {}
            if "epoch" in m and not m.get("replayed"):  # a finished run handing its result back: nothing new
                stage = self.stages[min(int(m.get("phase", 0)), len(self.stages) - 1)]
                if "first_stop_reason" in m:  # the retrain began: how the first stage ended, before its lines
                    self.queue.put_nowait((SUMMARY, self.stages[0], summary_line(
                        self.stages[0], m["first_stop_reason"], int(m["first_epochs"]), int(m["first_steps"]),
                        float(m["first_seconds"]), int(m["first_best_epoch"]))))
                line = epoch_line(stage, int(m["epoch"]) - 1, _unflattened(m))
                try:
                    self.queue.put_nowait((LINE, stage, line))
                except Exception:  # the driver is gone or its queue is full: a line is not worth failing a run for
                    pass

    return EpochLines


def _ray_queue():
    from ray.util.queue import Queue


    return Queue(actor_options={"num_cpus": 0, **on_driver_node()})


class LiveLines:
    """The driver's end: one queue for every Train run of a workflow (a zero-CPU Ray queue unless ``queue`` is
    given), drained by a daemon thread into ``log``."""

    def __init__(self, log: Log, queue: Any = None):
        self.log = log
        self._progress: dict[str, tuple[int, Progress]] = {}  # stage label → (evaluation period, its progress)
        self.summarised: set[str] = set()  # stages whose summary line was printed live
        self._printed: set[str] = set()  # "[stage] epoch N" of every epoch line printed
        self.queue = queue if queue is not None else _ray_queue()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="autosrh-live-lines", daemon=True)
        self._thread.start()

    def callback(self, *stages: str):
        """A Ray Train callback that sends the epoch lines of a run's ``stages`` (one label per phase) here."""
        return _callback_class()(self.queue, stages)

    def flush(self) -> None:
        """Print every line queued so far (call after a Train run returns, before its summary line)."""
        with self._lock:
            size = self.queue.qsize()
            for item in self.queue.get_nowait_batch(size) if size else []:
                self._show(item)

    def _show(self, item: tuple) -> None:
        beat()
        if item[0] == RESUMED:
            _, label, header, earlier = item
            self._end_progress(label)
            unseen = [line for line in earlier if _epoch_of(line) not in self._printed]
            self.log(header + ("; the evaluations before it:" if unseen else ""))
            for line in unseen:
                self._printed.add(_epoch_of(line))
                self.log(line)
            return
        if item[0] in (LINE, SUMMARY):
            _, label, line = item
            if item[0] == SUMMARY:
                self.summarised.add(label)
            else:
                self._printed.add(_epoch_of(line))
            self._end_progress(label)
            self.log(line)
            return
        _, label, epoch, done, total = item
        current = self._progress.get(label)
        if current is None or current[0] != epoch:
            self._end_progress(label)
            current = (epoch, Progress(f"{label} epoch {epoch}", total, self.log, every=30.0, final_line=False))
            self._progress[label] = current
        current[1].update(min(done, total))

    def _end_progress(self, label: Optional[str]) -> None:
        """Close the progress of ``label`` (its evaluation line is next), or of every stage."""
        for key in [label] if label is not None else list(self._progress):
            found = self._progress.pop(key, None)
            if found is not None:
                found[1].close()

    def rows_channel(self, stages: tuple[str, ...], period_rows: tuple[int, ...]) -> "RowsChannel":
        """What rank 0 of a Train run needs to send its rows, per phase (travels in the run's spec)."""
        return RowsChannel(self.queue, stages, period_rows)

    def _drain(self) -> None:
        import ray

        nodes = NodeWatch(self.log)
        while not self._closed.wait(POLL_SECONDS):
            if not ray.is_initialized():  # Ray shut down (a run abandoned after a stall): a call would start one
                return
            try:
                self.flush()
                nodes.poll()
            except Exception:  # the queue's actor is gone (Ray shut down): nothing more to print
                return

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.flush()
        self._end_progress(None)
        self.queue.shutdown()


class NodeWatch:
    """One line per node the cluster loses or gains while the run goes (``poll`` every few seconds, in the live
    lines' thread): what Ray Train does about a lost worker node — restart its workers from the run's last
    checkpoint, on the nodes left or on one that joins — is said by the stage's own "resumed" line."""

    def __init__(self, log: Log, every_s: float = 2.0, nodes: Optional[Callable[[], list[dict]]] = None):
        self.log, self.every_s = log, every_s
        self._nodes = nodes or alive_nodes
        self._last = 0.0
        self._alive = {n["NodeID"]: n for n in self._nodes()}

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        alive = {n["NodeID"]: n for n in self._nodes()}
        for node_id in self._alive.keys() - alive.keys():
            self.log(f"[ray] lost node {_node_name(self._alive[node_id])}: Ray Train restarts the workers it held "
                     f"from the run's last checkpoint (ray.max_failures), on the nodes left or one that joins")
        for node_id in alive.keys() - self._alive.keys():
            self.log(f"[ray] node {_node_name(alive[node_id])} joined ({alive[node_id].get('Resources', {}).get('CPU', 0):g} "
                     f"CPUs)")
        self._alive = alive


def _node_name(node: dict) -> str:
    return f"{node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"
