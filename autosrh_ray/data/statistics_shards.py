"""The categorical value counts merged outside the driver, in hash partitions, with ``min_count`` folded there.

At Criteo's size a vocabulary has tens of millions of distinct values, of which ``min_count`` keeps about a
million. Merging every chunk's statistics in the driver held all distinct values (and their pending copies) in
the driver process. Instead the driver routes each chunk's categorical rows by a hash of (field, value) to
:class:`StatisticsShard` actors (zero CPUs: they only merge); each keeps its partition merged as chunks arrive
(:class:`~.statistics_table.StatisticsMerger`) and at the end hands back only the values seen at least ``min_count``
times in train, plus per field the training rows of the values it folded into the OOV feature. The driver's
share is then bounded by the kept vocabulary and one chunk's table at a time; the small bookkeeping rows
(numerical sums, row counters, label sums) stay in the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..runtime import on_driver_node
from .statistics_table import StatisticsMerger

MIX = np.uint64(0x9E3779B97F4A7C15)


def partition_of(fields: np.ndarray, values: pa.Array, parts: int) -> np.ndarray:
    """A partition in [0, parts) per (field, value): a vectorised position-weighted hash of the value's UTF-8
    bytes mixed with its field (the same key lands in the same partition in every chunk)."""
    if parts == 1:
        return np.zeros(len(values), np.int64)
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    start, lengths = offsets[0], np.diff(offsets)
    raw = data[start:offsets[-1]].astype(np.uint64)
    position = (np.arange(len(raw), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = raw * ((position + np.uint64(1)) * MIX)
        h = np.zeros(n, np.uint64)
        nonempty = lengths > 0
        if nonempty.any():
            h[nonempty] = np.add.reduceat(mixed, (offsets[:-1] - start)[nonempty])
        h ^= fields.astype(np.uint64) * MIX
        h ^= h >> np.uint64(29)
        h *= MIX
        h ^= h >> np.uint64(32)
    return (h % np.uint64(parts)).astype(np.int64)


@dataclass(frozen=True)
class FoldedCounts:
    """What a shard hands back: kept (field, value, count) rows, folded training rows per field, its size."""

    kept: pa.Table
    folded: np.ndarray  # per field: training rows of values below min_count (they map to the field's OOV)
    distinct: int  # distinct (field, value) keys it merged
    peak_rows: int  # the most rows it held at once (merged + pending)
    peak_bytes: int  # the most Arrow bytes it held at once


class StatisticsShard:
    """One hash partition of the categorical counts (a Ray actor in :func:`sharded_counts`; plain class here)."""

    def __init__(self) -> None:
        self.merger = StatisticsMerger()
        self.peak_rows = self.peak_bytes = 0

    def add(self, table: pa.Table) -> None:
        self.merger.add(table)
        self.peak_rows = max(self.peak_rows, self.merger.rows_held)
        self.peak_bytes = max(self.peak_bytes, self.merger.bytes_held)

    def fold(self, min_count: int, num_fields: int) -> FoldedCounts:
        merged = self.merger.result()
        count = merged.column("count").to_numpy()
        keep = count >= min_count
        field = merged.column("field").to_numpy().astype(np.int64)
        folded = np.bincount(field[~keep], weights=count[~keep], minlength=num_fields).astype(np.int64)
        kept = merged.filter(pa.array(keep)).select(["field", "value", "count"])
        return FoldedCounts(kept, folded, merged.num_rows, self.peak_rows, self.peak_bytes)


class ShardedCounts:
    """The driver's side: ``add(table)`` routes a chunk's categorical rows to ``parts`` shard actors (``parts``
    0: one shard in this process, for inputs of a few chunks, where actors' start-up would cost more than
    they save); ``fold(min_count)`` gathers the kept rows and the folded counts."""

    def __init__(self, parts: int, num_fields: int):
        self.parts, self.num_fields = max(1, parts), num_fields
        self._sent: list = []
        if parts == 0:
            self.shards = [StatisticsShard()]
            return
        import ray

        actor = ray.remote(num_cpus=0)(StatisticsShard).options(**on_driver_node())
        self.shards = [actor.remote() for _ in range(parts)]

    @property
    def local(self) -> bool:
        return isinstance(self.shards[0], StatisticsShard)

    def add(self, table: pa.Table) -> None:
        if self.local:
            self.shards[0].add(table)
            return
        import ray

        part = partition_of(table.column("field").to_numpy(), table.column("value"), self.parts)
        for p, shard in enumerate(self.shards):
            piece = table.filter(pa.array(part == p))
            if piece.num_rows:
                self._sent.append(shard.add.remote(piece))
        # back-pressure: a few chunks in flight per shard at most, so the object store holds little
        if len(self._sent) > 4 * self.parts:
            done, self._sent = ray.wait(self._sent, num_returns=len(self._sent) - 2 * self.parts)
            ray.get(done)

    def fold(self, min_count: int) -> FoldedCounts:
        """Every shard's kept rows (one table), folded training rows per field, distinct keys, and the largest
        shard's peak rows and bytes."""
        if self.local:
            results = [self.shards[0].fold(min_count, self.num_fields)]
        else:
            import ray

            ray.get(self._sent)
            results = ray.get([shard.fold.remote(min_count, self.num_fields) for shard in self.shards])
            for shard in self.shards:
                ray.kill(shard)
        return FoldedCounts(pa.concat_tables([r.kept for r in results]),
                            np.sum([r.folded for r in results], axis=0).astype(np.int64),
                            sum(r.distinct for r in results), max(r.peak_rows for r in results),
                            max(r.peak_bytes for r in results))
