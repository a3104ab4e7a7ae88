"""Live progress of Ray Train runs in the driver's output (a terminal, or ``ray job logs``).

Ray Train calls its callbacks in the run's controller actor, not in the driver, and worker output is not
forwarded (``ray.verbose: false``). So :class:`EpochLines`, a Train callback, formats each evaluation's report
as it arrives and puts the line on a small Ray queue (an actor holding no CPU); :class:`LiveLines` drains that
queue in a driver thread and prints each line at once — while the stage runs, not when its Train run ends.
"""
from __future__ import annotations

import threading
from typing import Callable

from ..pipeline import epoch_line

Log = Callable[[str], None]
POLL_SECONDS = 0.25


def _unflattened(metrics: dict) -> dict:
    """A report's metrics as the history keeps them (``valid_auc`` → ``auc``), counters left out."""
    return {k.removeprefix("valid_"): v for k, v in metrics.items()
            if k not in ("epoch", "step", "best_epoch", "resumed_from_step", "replayed")}


def _callback_class():
    from ray.train import UserCallback

    class EpochLines(UserCallback):
        """Puts ``[stage] epoch N: …`` on ``queue`` after every report of rank 0 (in the Train controller)."""

        def __init__(self, queue, stage: str):
            self.queue, self.stage = queue, stage

        def after_report(self, run_context, metrics, checkpoint) -> None:
            m = metrics[0] if metrics else {}
            if "epoch" in m and not m.get("replayed"):  # a finished run handing its result back: nothing new
                self.queue.put_nowait(epoch_line(self.stage, int(m["epoch"]) - 1, _unflattened(m)))

    return EpochLines


class LiveLines:
    """The driver's end: one queue for every Train run of a workflow, drained by a daemon thread into ``log``."""

    def __init__(self, log: Log):
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.log = log
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy":
                                          PlacementGroupSchedulingStrategy(placement_group=None)})
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="autosrh-live-lines", daemon=True)
        self._thread.start()

    def callback(self, stage: str):
        """A Ray Train callback that sends ``stage``'s epoch lines here."""
        return _callback_class()(self.queue, stage)

    def flush(self) -> None:
        """Print every line queued so far (call after a Train run returns, before its summary line)."""
        with self._lock:
            size = self.queue.qsize()
            for line in self.queue.get_nowait_batch(size) if size else []:
                self.log(line)

    def _drain(self) -> None:
        while not self._closed.wait(POLL_SECONDS):
            try:
                self.flush()
            except Exception:  # the queue's actor is gone (Ray shut down): nothing more to print
                return

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.flush()
        self.queue.shutdown()
