"""Distributed vocabulary, frequencies and row accounting on Ray Data.

Every read task turns its pieces into a small *statistics table* with one row per (field, value): training
counts of categorical values (numerical fields bucketized first under ``numeric: bucketize``), partial sums and
ranges (min, max) of numerical fields, and row counters per split and per skip reason (negative field codes). The
merged table (one row per distinct training value, never per data row) goes into
:meth:`FeatureSpace.from_count_table`, which fixes the global id order (descending training frequency, field,
value).

Each read task combines its pieces into one statistics table per chunk. As chunk tables arrive, the driver
routes their categorical rows by a hash of (field, value) to shard actors that merge them with pyarrow's
vectorised ``group_by`` (:class:`StatisticsMerger`) and fold values below ``min_count`` into their field's OOV
count before anything comes back (:mod:`.statistics_shards`): the driver holds one chunk's table and the kept
vocabulary, never every distinct value. (Measured alternatives: ``groupby(["field", "value"]).sum(...)``
aggregates group by group, ~100x slower on 500k statistics rows; a hash-partitioned ``groupby("part")`` reduce
is fast but materialises every partial table first, so peak memory grew 1.4x from 200k to 1M rows.)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.features import FeatureSpace, FieldSpec, NumericStats
from .chunk_dataset import chunk_dataset
from .inputs import Chunk
from .local import field_columns
from .prepared import RowCounts
from .readers import Layout, Parsed, parse_chunk
from .split import SPLIT_NAMES, TRAIN, split_of
from .statistics_shards import ShardedCounts
from .statistics_table import BAD_FIELD, LABEL_FIELD, ROWS_FIELD, STATS_SCHEMA, StatisticsMerger


def field_specs(layout: Layout, numeric_mode: str) -> list[FieldSpec]:
    """The fields in id-table order (as :func:`.local.field_columns` builds them): numerical, then categorical."""
    kind = "categorical" if numeric_mode == "bucketize" else "numerical"
    return [FieldSpec(n, kind) for n in layout.numerical_fields] + \
        [FieldSpec(c, "categorical") for c in layout.categorical_fields]


def encode_fields(parsed: Parsed, layout: Layout, numeric_mode: str) -> tuple[list[FieldSpec], dict[str, pa.Array]]:
    """Field columns of a parsed piece, numerical fields bucketized or kept as numbers."""
    table = pa.table({k: parsed.columns[k] for k in (*layout.numerical_fields, *layout.categorical_fields)})
    return field_columns(table, layout.categorical_fields, layout.numerical_fields, numeric_mode)


def _rows(fields: list[int], values: list[str], counts: list[int], sums=None, sumsqs=None, mins=None,
          maxs=None) -> pa.Table:
    n = len(fields)
    return pa.table({
        "field": pa.array(fields, pa.int32()), "value": pa.array(values, pa.string()),
        "count": pa.array(counts, pa.int64()),
        "sum": pa.array(sums if sums is not None else np.zeros(n), pa.float64()),
        "sumsq": pa.array(sumsqs if sumsqs is not None else np.zeros(n), pa.float64()),
        "min": pa.array(mins if mins is not None else np.zeros(n), pa.float64()),
        "max": pa.array(maxs if maxs is not None else np.zeros(n), pa.float64()),
    }, schema=STATS_SCHEMA)


def piece_statistics(parsed: Parsed, layout: Layout, numeric_mode: str, seed: int,
                     fractions: Sequence[float]) -> pa.Table:
    """The statistics table of one parsed piece (training counts, partial sums, row counters, first bad row)."""
    split = split_of(parsed.positions, seed, fractions)
    parts: list[pa.Table] = []
    fields, columns = encode_fields(parsed, layout, numeric_mode)
    train = pa.array(split == TRAIN)
    n_train = int((split == TRAIN).sum())
    for f, spec in enumerate(fields):
        col = columns[spec.name].filter(train)
        if spec.kind == "categorical":
            vc = pc.value_counts(col)
            values = vc.field("values")
            parts.append(pa.table({
                "field": pa.array(np.full(len(vc), f, np.int32)), "value": values.cast(pa.string()),
                "count": vc.field("counts").cast(pa.int64()),
                "sum": pa.array(np.zeros(len(vc))), "sumsq": pa.array(np.zeros(len(vc))),
                "min": pa.array(np.zeros(len(vc))), "max": pa.array(np.zeros(len(vc)))}, schema=STATS_SCHEMA))
        else:
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            x = x[~np.isnan(x)]
            low, high = (float(x.min()), float(x.max())) if len(x) else (np.inf, -np.inf)
            parts.append(_rows([f], [""], [len(x)], [float(x.sum())], [float((x * x).sum())], [low], [high]))
    labels = parsed.labels[split == TRAIN].astype(np.float64)
    parts.append(_rows([LABEL_FIELD], ["label"], [n_train], [float(labels.sum())]))
    counter_values, counter_counts = [], []
    for code, name in enumerate(SPLIT_NAMES):
        counter_values.append(name)
        counter_counts.append(int((split == code).sum()))
    if len(parsed.bad_positions):
        bad_split = split_of(parsed.bad_positions, seed, fractions)
        keys = np.char.add(np.char.add(np.asarray(SPLIT_NAMES)[bad_split].astype(str), ":"),
                           parsed.bad_reasons.astype(str))
        uniq, cnt = np.unique(keys, return_counts=True)
        counter_values += uniq.tolist()
        counter_counts += cnt.tolist()
    parts.append(_rows([ROWS_FIELD] * len(counter_values), counter_values, counter_counts))
    if parsed.first_bad is not None:
        # the position rides in the int64 count (exact for every (file, line); a float64 sum is not past 2^53)
        parts.append(_rows([BAD_FIELD], [parsed.first_bad[1]], [int(parsed.first_bad[0])]))
    return pa.concat_tables(parts)


def chunk_statistics(batch: pa.Table, layout: Layout, numeric_mode: str, seed: int, fractions: list[float],
                     synthetic_cfg=None):
    """Ray Data ``map_batches`` body: chunk descriptors in, one combined statistics table per chunk out."""
    for item in batch.to_pylist():
        merger = StatisticsMerger()
        for parsed in parse_chunk(layout, Chunk.from_item(item), synthetic_cfg):
            merger.add(piece_statistics(parsed, layout, numeric_mode, seed, fractions))
        result = merger.result()
        del merger
        pa.default_memory_pool().release_unused()
        yield result


@dataclass
class Statistics:
    """Merged statistics of the whole input; ``value_counts``: one row per (categorical field, value) with its
    training count."""

    value_counts: pa.Table
    numeric_stats: list[Optional[NumericStats]]
    rows: RowCounts
    label_sum: float
    first_bad: Optional[tuple[int, str]] = None
    skipped_by_split: dict[str, dict[str, int]] = field(default_factory=dict)
    folded: Optional[np.ndarray] = None  # per field: training rows of values already folded into its OOV
    distinct_values: int = 0  # distinct (categorical field, value) keys in train, before min_count
    peak_rows: int = 0  # the most statistics rows one merging process held at once
    peak_bytes: int = 0  # ... and the most Arrow bytes

    def summary(self) -> dict:
        """What the prepared data's meta keeps of the statistics pass."""
        return {"distinct_values": self.distinct_values, "kept_values": self.value_counts.num_rows,
                "peak_rows": self.peak_rows, "peak_bytes": self.peak_bytes}

    def feature_space(self, fields: Sequence[FieldSpec], min_count: int) -> FeatureSpace:
        """Global ids in frequency order (``FeatureSpace.from_count_table``)."""
        return FeatureSpace.from_count_table(fields, self.value_counts, self.numeric_stats, min_count, self.folded)


def merge_statistics(table: pa.Table, fields: Sequence[FieldSpec]) -> Statistics:
    """Read the merged statistics table (one row per key, :class:`StatisticsMerger`) into :class:`Statistics`
    in the driver; the categorical counts stay an Arrow table."""
    sums: dict[int, list[float]] = {}
    counters: dict[str, int] = defaultdict(int)
    label_sum, first_bad = 0.0, None
    categorical = np.array([s.kind == "categorical" for s in fields] + [False], dtype=bool)
    value_counts = pa.table({"field": pa.array([], pa.int32()), "value": pa.array([], pa.string()),
                             "count": pa.array([], pa.int64())})
    if table.num_rows:
        f = table.column("field").to_numpy()
        cnt = table.column("count").to_numpy()
        s, ss = table.column("sum").to_numpy(), table.column("sumsq").to_numpy()
        lo, hi = table.column("min").to_numpy(), table.column("max").to_numpy()
        values = table.column("value")
        for i in np.flatnonzero(f < 0):
            v = values[int(i)].as_py()
            if f[i] == ROWS_FIELD:
                counters[v] += int(cnt[i])
            elif f[i] == LABEL_FIELD:
                label_sum += float(s[i])
            elif f[i] == BAD_FIELD and (first_bad is None or cnt[i] < first_bad[0]):
                first_bad = (int(cnt[i]), v)
        for i in np.flatnonzero((f >= 0) & ~categorical[np.where(f >= 0, f, -1)]):
            acc = sums.setdefault(int(f[i]), [0, 0.0, 0.0, np.inf, -np.inf])
            acc[0] += int(cnt[i])
            acc[1] += float(s[i])
            acc[2] += float(ss[i])
            acc[3], acc[4] = min(acc[3], float(lo[i])), max(acc[4], float(hi[i]))
        value_counts = (table.filter(pa.array((f >= 0) & categorical[np.where(f >= 0, f, -1)]))
                        .select(["field", "value", "count"]))
    stats = [NumericStats.from_sums(*sums.get(fi, [0, 0.0, 0.0, None, None])) if spec.kind == "numerical" else None
             for fi, spec in enumerate(fields)]
    rows = RowCounts()
    by_split: dict[str, dict[str, int]] = {name: {} for name in SPLIT_NAMES}
    for key, n in counters.items():
        if ":" in key:
            split, reason = key.split(":", 1)
            by_split[split][reason] = by_split[split].get(reason, 0) + n
            rows.skipped += n
            rows.skipped_by_reason[reason] = rows.skipped_by_reason.get(reason, 0) + n
        else:
            setattr(rows, key, getattr(rows, key) + n)
    rows.read = rows.train + rows.valid + rows.test + rows.skipped
    rows.skipped_by_reason = dict(sorted(rows.skipped_by_reason.items()))
    return Statistics(value_counts, stats, rows, label_sum, first_bad,
                      {k: dict(sorted(v.items())) for k, v in by_split.items()})


SHARD_MIN_CHUNKS = 8  # fewer chunks: one shard in the driver (the actors' start-up would cost more than it saves)


def shard_count(chunks: int, cluster_cpus: float) -> int:
    """Shard actors for the categorical counts: 0 (in the driver) for a few chunks, else one per 2 CPUs,
    2 to 16."""
    return 0 if chunks < SHARD_MIN_CHUNKS else max(2, min(16, int(cluster_cpus) // 2))


def count_statistics(chunks: Sequence[Chunk], layout: Layout, numeric_mode: str, seed: int,
                     fractions: Sequence[float], fields: Sequence[FieldSpec], synthetic_cfg=None,
                     progress: Optional[Callable[[int], None]] = None, min_count: int = 1,
                     parts: Optional[int] = None) -> Statistics:
    """Run the statistics pass on Ray Data over all chunks and merge the result; ``progress`` gets the number of
    chunks counted so far. Categorical counts are merged in ``parts`` hash shards (default
    :func:`shard_count`) that fold values seen fewer than ``min_count`` times in train into their field's OOV
    (:mod:`.statistics_shards`): the driver receives only the kept vocabulary."""
    import ray


    ds = chunk_dataset(chunks)
    ds = ds.map_batches(chunk_statistics, batch_size=1, batch_format="pyarrow", fn_kwargs=dict(
        layout=layout, numeric_mode=numeric_mode, seed=seed, fractions=list(fractions), synthetic_cfg=synthetic_cfg))
    categorical = np.array([s.kind == "categorical" for s in fields] + [False], dtype=bool)
    shards = ShardedCounts(shard_count(len(chunks), ray.cluster_resources().get("CPU", 1.0))
                           if parts is None else parts, len(fields))
    merger = StatisticsMerger()  # numerical sums, row counters, label sums: a few rows per field
    for done, table in enumerate(ds.iter_batches(batch_format="pyarrow", batch_size=None), 1):  # as chunks finish
        f = table.column("field").to_numpy()
        is_value = pa.array(categorical[np.where(f >= 0, f, -1)])
        shards.add(table.filter(is_value))
        merger.add(table.filter(pc.invert(is_value)))
        if progress is not None:
            progress(done)
    counts = shards.fold(min_count)
    stats = merge_statistics(merger.result(), fields)
    stats.value_counts, stats.folded = counts.kept, counts.folded
    stats.distinct_values = counts.distinct
    stats.peak_rows, stats.peak_bytes = max(counts.peak_rows, merger.rows_held), max(counts.peak_bytes,
                                                                                    merger.bytes_held)
    return stats
