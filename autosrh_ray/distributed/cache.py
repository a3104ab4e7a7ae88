"""Per-worker memory for splits that fit: the first streamed pass is kept, later passes replay it in memory.

Every epoch of a streamed split restarts Ray Data (seconds of start-up per epoch, and Ray Data's executor
running beside the training step). When a worker's share of a split fits in its budget
(``ray.worker_cache_mb``), the first pass is copied into memory as it streams — into tensors allocated once, so
the batches trained on *are* the cache and nothing is copied twice — and later passes come from memory:
train rows in a new seeded permutation per epoch (a full shuffle of the worker's rows), evaluation rows in order.

Whether the replay is used is agreed by all ranks (:class:`FirstPass`, with a MIN all-reduce from the Train
loop), because ``streaming_split`` starts each pass on all ranks together: one rank replaying while another
streams would leave the streaming one waiting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from ..allocator import MappedArena
from ..batch import Batch


@dataclass
class Budget:
    """Bytes a worker may still keep in memory (shared by its caches)."""

    bytes_left: int

    def take(self, nbytes: int) -> bool:
        if nbytes > self.bytes_left:
            return False
        self.bytes_left -= nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.bytes_left += nbytes


def batch_bytes(batch: Batch) -> int:
    return sum(t.element_size() * t.nelement() for t in (batch.ids, batch.values, batch.labels))


class RowCache:
    """``rows`` rows of ``num_fields`` fields, allocated once, filled batch by batch in stream order."""

    def __init__(self, rows: int, num_fields: int):
        memory = MappedArena()  # outside the heap (it lives as long as the run: allocator.MappedArena)
        self.ids = memory.empty((rows, num_fields), torch.int64)
        self.values = memory.empty((rows, num_fields), torch.float32)
        self.labels = memory.empty(rows, torch.float32)
        self.filled = 0
        self.spoiled = False  # the stream brought more rows than planned: never replayed

    @staticmethod
    def nbytes(rows: int, num_fields: int) -> int:
        return rows * (num_fields * (8 + 4) + 4)

    @property
    def size(self) -> int:
        return self.nbytes(*self.ids.shape)

    @property
    def complete(self) -> bool:
        return not self.spoiled and self.filled == len(self.labels)

    def add(self, ids: np.ndarray, values: np.ndarray, labels: np.ndarray) -> Optional[Batch]:
        """Copy one batch in and return it as a view of the cache; None once rows overflow the plan."""
        lo, hi = self.filled, self.filled + len(labels)
        if self.spoiled or hi > len(self.labels):
            self.spoiled = True
            return None
        self.ids.numpy()[lo:hi] = ids  # casts (int32 → int64) while copying out of read-only Arrow memory
        self.values.numpy()[lo:hi] = values
        self.labels.numpy()[lo:hi] = labels
        self.filled = hi
        return Batch(self.ids[lo:hi], self.values[lo:hi], self.labels[lo:hi])

    def shuffled(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
        """Full batches of a new permutation of the cached rows (the remainder is dropped, as when streaming)."""
        order = torch.from_numpy(rng.permutation(self.filled))
        for start in range(0, self.filled - self.filled % batch_size, batch_size):
            idx = order[start:start + batch_size]
            yield Batch(self.ids[idx], self.values[idx], self.labels[idx])


class KeptBatches:
    """Batches kept as they stream while they fit in ``budget``; once one does not fit, all are dropped and
    their bytes given back (``batches`` is then None). Feature ids are kept as int32 (ids < 2^31; two thirds of
    the bytes of a row of int64 ids, float32 values), widened back to int64 as they are replayed."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.batches: Optional[list[Batch]] = []
        self._taken = 0
        self._memory = MappedArena()  # kept batches outside the heap (allocator.MappedArena)

    def keep(self, batch: Batch) -> None:
        if self.batches is None:
            return
        wide = batch.ids.numel() and int(batch.ids.max()) > torch.iinfo(torch.int32).max
        n = batch_bytes(batch) - (0 if wide else 4 * batch.ids.numel())
        if self.budget.take(n):
            ids = self._memory.copy(batch.ids, None if wide else torch.int32)
            self.batches.append(Batch(ids, self._memory.copy(batch.values), self._memory.copy(batch.labels)))
            self._taken += n
        else:
            self.release()

    @staticmethod
    def nbytes(rows: int, num_fields: int) -> int:
        """Bytes of ``rows`` kept rows (int32 ids)."""
        return rows * (num_fields * (4 + 4) + 4)

    def replay(self, order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """The kept batches (in ``order``, default as kept) with int64 ids."""
        for i in range(len(self.batches)) if order is None else order:
            b = self.batches[i]
            yield Batch(b.ids.long(), b.values, b.labels)

    def release(self) -> None:
        """Drop the kept batches and give their bytes back."""
        self.budget.give(self._taken)
        self.batches, self._taken, self._memory = None, 0, MappedArena()


@dataclass
class FirstPass:
    """Whether a split's first pass was kept whole, and (agreed by all ranks) whether later passes replay it."""

    started: bool = False
    whole: bool = False
    replay: Optional[bool] = None

    def replaying(self, agree: Callable[[bool], bool], release: Callable[[], None]) -> bool:
        """Call at the start of every pass, on every rank at the same point of the loop; ``release`` frees the
        kept copy once the ranks decide not to replay it."""
        if self.replay is None and self.started:
            self.replay = agree(self.whole)
            if not self.replay:
                release()
        return bool(self.replay)
