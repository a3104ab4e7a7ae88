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
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import numpy as np
import torch

from ..engine.allocator import CHUNK_BYTES, MappedArena
from ..engine.batch import Batch


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


class Span(NamedTuple):
    """Where one kept batch lies: ``rows`` rows from ``start`` of chunk ``chunk``."""

    chunk: int
    start: int
    rows: int


class KeptBatches:
    """Batches kept as they stream while they fit in ``budget``; once one does not fit, all are dropped and
    their bytes given back (``batches`` is then None). Feature ids are kept as int32 (ids < 2^31; two thirds of
    the bytes of a row of int64 ids, float32 values), widened back to int64 as they are replayed.

    Rows are copied into chunks of mapped memory (:class:`~autosrh_ray.engine.allocator.MappedArena`), each a few tensors
    allocated once; a kept batch is only a :class:`Span` (plain Python ints). Tensors made per kept batch would
    each leave a small C++ object in the malloc heap for the rest of the run, between the step's large transient
    blocks: in a Ray Train worker (a thread arena of 64 MiB heaps) those pinned heaps grew the 45M-row search's
    worker by ~15 MiB a step while α's first pass was kept (12 GiB after ~650 steps)."""

    def __init__(self, budget: Budget, chunk_bytes: int = CHUNK_BYTES):
        self.budget = budget
        self.batches: Optional[list[Span]] = []
        self.chunk_bytes = chunk_bytes
        self._chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._filled = 0  # rows used in the last chunk
        self._taken = 0

    def keep(self, batch: Batch) -> None:
        if self.batches is None:
            return
        wide = batch.ids.numel() and int(batch.ids.max()) > torch.iinfo(torch.int32).max
        n = batch_bytes(batch) - (0 if wide else 4 * batch.ids.numel())
        if not self.budget.take(n):
            self.release()
            return
        self._taken += n
        rows, dtype = len(batch), torch.int64 if wide else torch.int32
        last = self._chunks[-1] if self._chunks else None
        if last is None or last[0].dtype != dtype or last[0].shape[1:] != batch.ids.shape[1:] \
                or self._filled + rows > len(last[2]):
            row_bytes = max(1, n // max(rows, 1))
            capacity = max(rows, self.chunk_bytes // row_bytes)
            memory = MappedArena(self.chunk_bytes)
            last = (memory.empty((capacity, *batch.ids.shape[1:]), dtype),
                    memory.empty((capacity, *batch.values.shape[1:]), batch.values.dtype),
                    memory.empty((capacity, *batch.labels.shape[1:]), batch.labels.dtype))
            self._chunks.append(last)
            self._filled = 0
        lo = self._filled
        for kept, new in zip(last, (batch.ids, batch.values, batch.labels)):
            kept[lo:lo + rows].copy_(new)
        self._filled += rows
        self.batches.append(Span(len(self._chunks) - 1, lo, rows))

    @staticmethod
    def nbytes(rows: int, num_fields: int) -> int:
        """Bytes of ``rows`` kept rows (int32 ids)."""
        return rows * (num_fields * (4 + 4) + 4)

    def stored(self, i: int) -> Batch:
        """Kept batch ``i`` as stored (views of its chunk; int32 ids unless one did not fit)."""
        chunk, lo, rows = self.batches[i]
        return Batch(*(t[lo:lo + rows] for t in self._chunks[chunk]))

    def replay(self, order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """The kept batches (in ``order``, default as kept) with int64 ids."""
        for i in range(len(self.batches)) if order is None else order:
            b = self.stored(i)
            yield Batch(b.ids.long(), b.values, b.labels)

    def release(self) -> None:
        """Drop the kept batches and give their bytes back."""
        self.budget.give(self._taken)
        self.batches, self._taken, self._chunks, self._filled = None, 0, [], 0


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
