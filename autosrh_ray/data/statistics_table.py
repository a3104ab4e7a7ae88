"""The statistics table of the vocabulary pass: one row per (field, value) with its training count (numerical
fields: partial sums and range), plus bookkeeping rows (row counts, the label sum, the first bad row) under
negative field codes; summed per key, incrementally, wherever the counts are merged (the driver or a shard)."""
from __future__ import annotations

import pyarrow as pa

ROWS_FIELD, LABEL_FIELD, BAD_FIELD = -1, -2, -3  # field codes of the bookkeeping rows
STATS_SCHEMA = pa.schema([("field", pa.int32()), ("value", pa.string()), ("count", pa.int64()),
                          ("sum", pa.float64()), ("sumsq", pa.float64()),  # numerical fields: partial sums,
                          ("min", pa.float64()), ("max", pa.float64())])   # and the partial range


def reduce_statistics(table: pa.Table) -> pa.Table:
    """Sum statistics rows per (field, value)."""
    merged = table.group_by(["field", "value"], use_threads=False).aggregate(
        [("count", "sum"), ("sum", "sum"), ("sumsq", "sum"), ("min", "min"), ("max", "max")])
    merged = merged.rename_columns([{"count_sum": "count", "sum_sum": "sum", "sumsq_sum": "sumsq", "min_min": "min",
                                     "max_max": "max"}.get(c, c) for c in merged.column_names])
    return merged.select(STATS_SCHEMA.names).cast(STATS_SCHEMA)


class StatisticsMerger:
    """Incremental sum of statistics tables; compacts when the pending rows outgrow the merged table, so the
    work is O(total rows · log) and memory stays near the number of distinct (field, value) keys."""

    def __init__(self, min_pending: int = 1 << 20):
        self._merged: pa.Table = STATS_SCHEMA.empty_table()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._min_pending = min_pending

    def add(self, table: pa.Table) -> None:
        self._pending.append(table.select(STATS_SCHEMA.names).cast(STATS_SCHEMA))
        self._pending_rows += table.num_rows
        if self._pending_rows >= max(self._merged.num_rows, self._min_pending):
            self._compact()

    @property
    def rows_held(self) -> int:
        """Rows in memory now: the merged table and the pending ones."""
        return self._merged.num_rows + self._pending_rows

    @property
    def bytes_held(self) -> int:
        """Arrow bytes in memory now: the merged table and the pending ones."""
        return self._merged.nbytes + sum(t.nbytes for t in self._pending)

    def _compact(self) -> None:
        if self._pending:
            self._merged = reduce_statistics(pa.concat_tables([self._merged, *self._pending]))
            self._pending, self._pending_rows = [], 0

    def result(self) -> pa.Table:
        self._compact()
        return self._merged
