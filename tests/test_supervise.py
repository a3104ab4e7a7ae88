"""The stall watchdog (``ray.stall_timeout_s``) without Ray: silence fails with one line naming what was waited
on and the key to raise; progress keeps a slow run alive; results and errors pass through; Ctrl-C is raised at
once and marks the run abandoned; a study's trial that reports nothing is stopped and named while the others go
on.

Nothing here races a sleep against a timeout: the clocks the watchdogs read are replaced by a clock the test
moves (:class:`_Clock`), and threads meet on events, so a loaded machine can only make a test slower."""
from __future__ import annotations

import _thread
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from autosrh_ray import supervise
from autosrh_ray.study import trial_key
from autosrh_ray.supervise import StallError, beat, doing, supervised


def test_results_and_errors_pass_through():
    assert supervised(lambda: 42, timeout_s=5) == 42
    with pytest.raises(KeyError):
        supervised(lambda: {}["missing"], timeout_s=5)


def test_silence_fails_with_one_line_naming_the_wait_and_the_key():
    release = threading.Event()

    def stuck():
        doing("[search] (Train run x-search)")
        release.wait(30)

    start = time.monotonic()
    released = []
    with pytest.raises(StallError) as caught:
        supervised(stuck, timeout_s=1.0, waiting_for=lambda: "placement groups: 1 PENDING {GPU: 1}",
                   release=lambda: released.append(supervise.abandoned()))
    release.set()
    assert time.monotonic() - start < 20  # about 1 s; a loaded machine only adds to it
    assert released == [True]  # the stalled run's resources were given back, its loops told to stop
    assert supervised(lambda: supervise.abandoned(), timeout_s=5) is False  # the next run starts anew
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("[search] (Train run x-search) reported nothing for")
    assert "1 PENDING {GPU: 1}" in message and "ray.stall_timeout_s" in message


class _Clock:
    """A monotonic clock the test moves (stands in for the ``time`` module of the watchdog under test); it counts
    its reads, so a run can wait until the supervising thread has looked at it."""

    def __init__(self):
        self.now = 1000.0
        self.reads = 0
        self.changed = threading.Condition()

    def monotonic(self) -> float:
        with self.changed:
            self.reads += 1
            self.changed.notify_all()
            return self.now

    def advance(self, seconds: float) -> None:
        with self.changed:
            self.now += seconds

    def await_reads(self, n: int) -> None:
        """Wait until the clock has been read ``n`` more times (by the supervising thread: the run waits here)."""
        with self.changed:
            target = self.reads + n
            assert self.changed.wait_for(lambda: self.reads >= target, timeout=60)


def test_progress_keeps_a_slow_run_alive_and_no_limit_means_none(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(supervise, "time", clock)
    monkeypatch.setattr(supervise, "POLL_SECONDS", 0.01)

    def slow_but_beating():
        for _ in range(12):  # 2.4 s of the watchdog's clock in all, never 1 s without a beat
            clock.advance(0.2)
            beat()
            clock.await_reads(2)  # the watchdog looked at this silence (and more than once)
        return "done"

    assert supervised(slow_but_beating, timeout_s=1.0) == "done"

    release = threading.Event()

    def silent_for_an_hour():
        clock.advance(3600.0)
        clock.await_reads(3)
        release.wait(60)  # waits for the test, so the watchdog sees the silence whatever the load
        return "done"

    for no_limit in (0, None):
        release.set()
        assert supervised(silent_for_an_hour, timeout_s=no_limit) == "done"
    release.clear()
    with pytest.raises(StallError, match="^the workflow reported nothing for 3600 s"):  # the same silence, a limit
        supervised(silent_for_an_hour, timeout_s=1.0)
    release.set()
    assert supervised(lambda: supervise.abandoned(), timeout_s=5) is False  # the next run starts anew


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, as the CLI's process has it: a Ray Train run earlier in this
    process may have left its handler behind, which does not raise ``KeyboardInterrupt``."""
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


def test_ctrl_c_is_raised_at_once_and_marks_the_run_abandoned(python_sigint):
    """Ctrl-C in the waiting (main) thread while the run still works: ``KeyboardInterrupt`` comes out of
    ``supervised`` without waiting for the run, and the run's own loops see :func:`supervise.abandoned`."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C is delivered to the main thread")
    release, seen = threading.Event(), threading.Event()
    abandoned_in_run = []

    def interrupted():
        _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the main thread
        release.wait(60)
        abandoned_in_run.append(supervise.abandoned())
        seen.set()

    with pytest.raises(KeyboardInterrupt):
        supervised(interrupted, timeout_s=0)
    assert not release.is_set()  # raised while the run was still going
    assert supervise.abandoned() is True
    assert supervise._state.depth == 0
    release.set()
    assert seen.wait(60)
    assert abandoned_in_run == [True]  # the run's loops (the study's Tune callback) are told to stop
    assert supervised(lambda: supervise.abandoned(), timeout_s=5) is False  # the next run starts anew


def test_a_nested_call_runs_directly():
    seen = []
    supervised(lambda: seen.append(supervised(lambda: threading.current_thread().name, timeout_s=1)), timeout_s=5)
    assert seen == ["autosrh-workflow"]  # the inner call ran in the outer worker thread
    assert supervise._state.depth == 0


def _trial(trial_id: str, lr: float, status: str = "RUNNING"):
    return SimpleNamespace(trial_id=trial_id, config={"train.lr": lr}, status=status, last_result={},
                           temporary_state=SimpleNamespace(ray_actor=None), path="/tmp/t")


def test_a_silent_study_trial_is_stopped_and_named_the_others_go_on(monkeypatch):
    from autosrh_ray.distributed import trial_watch

    monkeypatch.setattr(trial_watch, "ray_waiting_for", lambda: "no pending task or actor")
    clock = _Clock()
    monkeypatch.setattr(trial_watch, "time", clock)
    lines: list[str] = []
    watch = trial_watch.TrialWatch("valid_logloss", timeout_s=0.5, log=lines.append)
    quiet, busy = _trial("a", 0.1), _trial("b", 0.01)
    for t in (quiet, busy):
        watch.on_trial_start(0, [quiet, busy], t)
    clock.advance(0.3)
    watch.on_step_end(1, [quiet, busy])
    assert watch.stalled == {}  # 0.3 s of silence is within the limit
    watch.on_trial_result(1, [quiet, busy], busy, {"valid_logloss": 0.45, "training_iteration": 1})
    clock.advance(0.3)
    watch.on_step_end(2, [quiet, busy])
    assert set(watch.stalled) == {trial_key({"train.lr": 0.1})}
    assert any("valid_logloss 0.45000" in line for line in lines)
    assert any("study trial {'train.lr': 0.1} reported nothing" in line and "marked failed" in line
               for line in lines)
    watch.on_step_end(3, [quiet, busy])  # stopped once, not again
    assert sum("marked failed" in line for line in lines) == 1
    busy.last_result = {"valid_logloss": 0.44, "training_iteration": 2}
    watch.on_trial_complete(4, [quiet, busy], busy)
    assert "stopped by the scheduler after 2 evaluations (last valid_logloss 0.44000)" in lines[-1]
    busy.last_result = {"valid_logloss": 0.43, "trial_finished": 1}
    watch.on_trial_complete(5, [quiet, busy], busy)
    assert lines[-1].endswith("finished: valid_logloss 0.43000 at the study budget")
