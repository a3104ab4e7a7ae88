"""Streaming prepared shards into training: lazy ``ray.data`` datasets per split, and the row assembly that
turns the shards' per-field columns into the engine's ``(ids, values, label)`` arrays inside Ray Data's tasks.

Assembly (and the training shuffle) run in Ray Data's map tasks, under Ray Data's CPU budget, so a Train worker
only slices ready batches: the worker's own CPU time goes to the training step (``benchmarks/ray_overhead.py``).
"""
from __future__ import annotations

import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from .. import storage
from ..engine.features import FeatureSpace
from .prepared import PreparedData, column_names, split_from_columns
from .split import SPLIT_NAMES, in_alpha_slice

IDS, VALUES, LABEL = "ids", "values", "label"


def shard_schema(num_fields: int) -> pa.Schema:
    ids, values = column_names(num_fields)
    return pa.schema([(c, pa.int64()) for c in ids] + [(c, pa.float32()) for c in values] + [("label", pa.float32())])


def split_datasets(prepared: PreparedData, file_shuffle_seed: Optional[int] = None, task_cpus: float = 1.0) -> dict:
    """{"train", "valid", "test"} → lazy ``ray.data.Dataset`` reading that split's shards (input order kept
    when ``DataContext.execution_options.preserve_order`` is set). With ``file_shuffle_seed`` the train split's
    files are read in a new seeded order on every pass (epoch). Read tasks request ``task_cpus`` CPUs. An empty
    split is an empty dataset with the shard schema. Nothing is read in the driver."""
    import ray
    from ray.data import FileShuffleConfig

    out = {}
    for name in SPLIT_NAMES:
        if prepared.shards[name]:
            shuffle = (FileShuffleConfig(seed=file_shuffle_seed, reseed_after_execution=True)
                       if file_shuffle_seed is not None and name == "train" else None)
            # One directory path, not the list of shards: Ray 2.60 resolves a list of paths in threads, and
            # that import-races on fsspec's HTTP filesystem when aiohttp is absent (ImportError). The split's
            # directory holds exactly its shards (prepare clears it first); file names sort in input order.
            with parquet_datasource_v1():
                out[name] = ray.data.read_parquet(storage.join(prepared.directory, name),
                                                  file_extensions=["parquet"], shuffle=shuffle, num_cpus=task_cpus)
        else:
            out[name] = ray.data.from_arrow(shard_schema(prepared.features.num_fields).empty_table())
    return out


_DATA_CONTEXT = threading.Lock()


@contextmanager
def parquet_datasource_v1() -> Iterator[None]:
    """``ray.data.read_parquet`` through Ray Data's V1 Parquet datasource inside this block (the flag is read
    when the dataset is created). Ray 2.60's default V2 datasource starts footer-reader actors (a process each)
    and kills them on every execution: ~0.9 s before the first batch of every pass over a split on 2 CPUs
    (a 192k-row shard: V2 1.0 s to its first batch, V1 0.07 s; ``benchmarks/ray_overhead.py``)."""
    from ray.data import DataContext

    with _DATA_CONTEXT:
        context = DataContext.get_current()
        before, context.use_datasource_v2 = context.use_datasource_v2, False
        try:
            yield
        finally:
            context.use_datasource_v2 = before


@dataclass(frozen=True)
class AlphaSlice:
    """The training rows that fit α under ``search.alpha_data: train`` (:func:`~.split.in_alpha_slice`):
    ``inside`` keeps those rows (α's stream), otherwise the rest (Θ's search steps)."""

    fraction: float
    seed: int
    inside: bool

    def keep(self, ids: np.ndarray) -> np.ndarray:
        return in_alpha_slice(ids, self.fraction, self.seed) == self.inside


@dataclass(frozen=True)
class AssembleRows:
    """Ray Data batch function: per-field columns → ``ids`` (n, F), ``values`` (n, F) float32, ``label``;
    with ``shuffle`` the rows of each batch (a shuffle window) are permuted, seeded by ``seed`` and the window's
    content (reproducible run to run; a window holds other rows when the files come in another order);
    with ``rows`` only the rows of that α slice (or its complement) are kept.

    ``ids`` travel as int32 when every id fits (half the bytes through the object store); the worker widens
    them to int64 while copying the batch out of read-only Arrow memory, which it does anyway."""

    num_fields: int
    shuffle: bool = False
    narrow_ids: bool = False
    rows: Optional[AlphaSlice] = None
    seed: int = 0

    def __call__(self, columns: dict) -> dict:
        rows = split_from_columns(columns, self.num_fields)
        ids = rows.ids.astype(np.int32) if self.narrow_ids else rows.ids
        order = None if self.rows is None else np.flatnonzero(self.rows.keep(rows.ids))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(rows.ids))])
            order = rng.permutation(len(rows)) if order is None else rng.permutation(order)
        if order is None:
            return {IDS: ids, VALUES: rows.values, LABEL: rows.labels}
        return {IDS: ids[order], VALUES: rows.values[order], LABEL: rows.labels[order]}


def assembled_rows(dataset, features: FeatureSpace, shuffle_window: int = 0, rows: Optional[AlphaSlice] = None,
                   task_cpus: float = 1.0, seed: int = 0):
    """``dataset`` with rows assembled by :class:`AssembleRows` in Ray Data's tasks (``task_cpus`` CPUs each);
    ``shuffle_window`` > 0 permutes each window of that many consecutive rows (seeded by ``seed`` and the
    window; 0: the input order is kept); ``rows`` keeps one side of the α slice."""
    narrow = features.num_features <= np.iinfo(np.int32).max
    return dataset.map_batches(AssembleRows(features.num_fields, shuffle_window > 0, narrow, rows, seed),
                               batch_format="numpy", batch_size=shuffle_window or None, zero_copy_batch=True,
                               num_cpus=task_cpus)
