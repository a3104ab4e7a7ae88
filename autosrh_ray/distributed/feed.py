"""Training batches for the Train loop, one evaluation period at a time, in lockstep across ranks.

An evaluation period is one pass over the train split (``train.eval_every_steps`` = 0) or that many steps,
continuing from one pass into the next. Before every step all ranks agree that each has a batch (``agree``: a MIN
all-reduce in the loop), so a rank whose pass ran out ends the pass on every rank and no collective is left
waiting. The feed remembers where it is (pass, batches taken from it) so a checkpoint can resume mid-pass.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, Optional

from ..engine.batch import Batch
from .sources import ShardSource


class PeriodFeed:
    """Periods of this rank's training batches from ``source`` (resumed at pass ``data_epoch`` after
    ``position`` batches); ``timings()`` and ``samples`` describe the last period."""

    def __init__(self, source: ShardSource, eval_every_steps: int, data_epoch: int = 0, position: int = 0,
                 agree: Callable[[bool], bool] = bool):
        self.source, self.every, self.agree = source, eval_every_steps, agree
        self.data_epoch, self.position = data_epoch, position
        self._pass: Optional[Iterator[Batch]] = None
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.samples, self._wait, self._first, self._tail = 0, 0.0, 0.0, 0.0

    def _open(self) -> Iterator[Batch]:
        batches = self.source.train_epoch(self.data_epoch)
        for _ in range(self.position):  # resuming mid-pass: these were trained on before the checkpoint
            next(batches, None)
        return batches

    def period(self) -> Iterator[Batch]:
        """The next period's batches."""
        self._reset_stats()
        steps, last_step_end = 0, time.perf_counter()
        while self.every <= 0 or steps < self.every:
            if self._pass is None:
                self._pass = self._open()
            t = time.perf_counter()
            batch = next(self._pass, None)
            if not self.agree(batch is not None):  # the pass is over on some rank: over on every rank
                self._tail = time.perf_counter() - last_step_end
                empty = self.position == 0
                self._pass, self.data_epoch, self.position = None, self.data_epoch + 1, 0
                if empty:
                    raise ValueError("the train split has no full batch on this worker; lower train.batch_size")
                if self.every <= 0:
                    return
                continue
            waited = time.perf_counter() - t
            self._wait += waited
            self._first = waited if steps == 0 else self._first
            self.samples += len(batch)
            self.position += 1
            steps += 1
            yield batch
            last_step_end = time.perf_counter()

    def timings(self) -> dict:
        """Seconds of the last period spent waiting for batches, for its first batch, and for the pass's end."""
        return {"data_wait_seconds": self._wait, "first_batch_seconds": self._first,
                "end_of_stream_seconds": self._tail}
