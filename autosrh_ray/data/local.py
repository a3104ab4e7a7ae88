"""In-process prepare for tables that fit in memory: the reference the Ray Data path (:mod:`.prepare`) is tested
against, and the quick data of tests and benchmarks (the workflow itself always prepares on Ray Data).

Same output layout as the Ray Data path (see :mod:`.prepared`): counts on the training split only,
frequency-ordered ids, encoded Parquet shards.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Config
from ..engine.features import MISSING_TOKEN, FeatureSpace, FieldSpec, NumericStats, bucketize
from .prepared import PreparedData, RowCounts, encoded_table
from .split import SPLIT_NAMES, TRAIN, split_of
from .synthetic import LABEL, SyntheticGenerator


def config_hash(config: Config) -> str:
    """Hash of everything that determines the prepared data (the dataset section)."""
    return hashlib.sha256(json.dumps(asdict(config.dataset), sort_keys=True).encode()).hexdigest()[:16]


def field_columns(table: pa.Table, categorical: Sequence[str], numerical: Sequence[str],
                  numeric_mode: str) -> tuple[list[FieldSpec], dict[str, pa.Array]]:
    """Field specs and their columns: ``bucketize`` turns numerical columns into categorical tokens."""
    fields: list[FieldSpec] = []
    columns: dict[str, pa.Array] = {}
    for name in numerical:
        col = table.column(name).combine_chunks()
        if numeric_mode == "bucketize":
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            columns[name] = bucketize(x)
            fields.append(FieldSpec(name, "categorical"))
        else:
            columns[name] = col
            fields.append(FieldSpec(name, "numerical"))
    for name in categorical:
        columns[name] = pc.fill_null(table.column(name).combine_chunks().cast(pa.string()), MISSING_TOKEN)
        fields.append(FieldSpec(name, "categorical"))
    return fields, columns


def count_features(fields: Sequence[FieldSpec], columns: dict[str, pa.Array]):
    """Per-field value counts (categorical) and statistics (numerical) of the given (training) rows."""
    counts, stats = [], []
    for spec in fields:
        col = columns[spec.name]
        if spec.kind == "categorical":
            vc = pc.value_counts(col)
            counts.append(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))
            stats.append(None)
        else:
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            x = x[~np.isnan(x)]
            counts.append(None)
            stats.append(NumericStats.from_sums(len(x), float(x.sum()), float((x * x).sum()),
                                                *((x.min(), x.max()) if len(x) else (None, None))))
    return counts, stats


def prepare_table(table: pa.Table, label: str, categorical: Sequence[str], numerical: Sequence[str],
                  config: Config, output: str | Path) -> PreparedData:
    """Split, count on train, assign ids, encode and write the shards of an in-memory table."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    ds = config.dataset
    n = table.num_rows
    split = split_of(np.arange(n), ds.seed, ds.split)
    fields, columns = field_columns(table, categorical, numerical, config.numeric_mode)
    train_mask = pa.array(split == TRAIN)
    counts, stats = count_features(fields, {k: v.filter(train_mask) for k, v in columns.items()})
    space = FeatureSpace.from_counts(fields, counts, stats, ds.min_count)
    space.save(output)
    ids, values = space.encode(columns)
    labels = table.column(label).to_numpy().astype(np.float32)
    rows = RowCounts(read=n)
    shards: dict[str, list[str]] = {}
    for code, name in enumerate(SPLIT_NAMES):
        idx = np.flatnonzero(split == code)
        setattr(rows, name, int(len(idx)))
        (output / name).mkdir(exist_ok=True)
        rel = f"{name}/part-00000.parquet"
        pq.write_table(encoded_table(ids[idx], values[idx], labels[idx]), output / rel)
        shards[name] = [rel]
    rows.check()
    prepared = PreparedData(str(output), space, config.task, float(labels[split == TRAIN].mean()), rows,
                            config_hash(config), shards)
    prepared.write_meta()
    return prepared


def prepare_synthetic(config: Config, output: str | Path) -> PreparedData:
    """Generate the synthetic dataset in memory and prepare it."""

    gen = SyntheticGenerator(config.dataset.synthetic)
    return prepare_table(gen.table(), LABEL, gen.categorical, gen.numerical, config, output)
