"""The prepared-data contract between the data stage and training.

A prepared directory holds::

    meta.json             M, fields, task, label mean, rows read/kept/skipped (per split, per reason), config hash
    features.json         fields and numerical statistics      (FeatureSpace.save)
    frequencies.parquet   one row per global id: field, value, kind, training frequency
    train/ valid/ test/   Parquet shards, columns id0..id{F-1} (int64), value0..value{F-1} (float32), label (float32)

Training reads it through :class:`PreparedData` (in-process arrays or, in the Ray layers, ``ray.data`` datasets).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..engine.features import FeatureSpace
from .split import SPLIT_NAMES

META_FILE = "meta.json"


@dataclass
class RowCounts:
    """Rows read = train + valid + test + skipped, always."""

    read: int = 0
    train: int = 0
    valid: int = 0
    test: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_by_split: dict[str, dict[str, int]] = field(default_factory=dict)  # {split: {reason: count}}

    def describe(self) -> str:
        """``rows read 120,000 = train 95,770 + valid 12,190 + test 12,040 + skipped 0`` (and the skip reasons)."""
        reasons = ", ".join(f"{k}: {v:,}" for k, v in self.skipped_by_reason.items())
        return (f"rows read {self.read:,} = train {self.train:,} + valid {self.valid:,} + test {self.test:,} + "
                f"skipped {self.skipped:,}" + (f" ({reasons})" if self.skipped else ""))

    def check(self) -> None:
        kept = self.train + self.valid + self.test
        if self.read != kept + self.skipped or self.skipped != sum(self.skipped_by_reason.values()):
            raise AssertionError(f"row accounting broken: {self}")


@dataclass
class EncodedSplit:
    """One split as arrays: ids (N, F) int64, values (N, F) float32, labels (N,) float32."""

    ids: np.ndarray
    values: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, keep: np.ndarray) -> "EncodedSplit":
        """The rows where ``keep`` (a boolean mask or indices) selects."""
        return EncodedSplit(self.ids[keep], self.values[keep], self.labels[keep])


def column_names(num_fields: int) -> tuple[list[str], list[str]]:
    return [f"id{i}" for i in range(num_fields)], [f"value{i}" for i in range(num_fields)]


def encoded_table(ids: np.ndarray, values: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The shard schema for encoded rows."""
    id_cols, value_cols = column_names(ids.shape[1])
    cols = {name: pa.array(ids[:, i]) for i, name in enumerate(id_cols)}
    cols.update({name: pa.array(values[:, i].astype(np.float32)) for i, name in enumerate(value_cols)})
    cols["label"] = pa.array(labels.astype(np.float32))
    return pa.table(cols)


def split_from_columns(batch: dict, num_fields: int) -> EncodedSplit:
    """Stack a columnar batch (dict of numpy arrays, e.g. from Ray Data) into an :class:`EncodedSplit`."""
    id_cols, value_cols = column_names(num_fields)
    ids = np.stack([np.asarray(batch[c], dtype=np.int64) for c in id_cols], axis=1)
    values = np.stack([np.asarray(batch[c], dtype=np.float32) for c in value_cols], axis=1)
    return EncodedSplit(ids, values, np.asarray(batch["label"], dtype=np.float32))


@dataclass
class PreparedData:
    """A prepared directory (a local path or a URI), loaded: its feature space, row counts and shard paths."""

    directory: str
    features: FeatureSpace
    task: str
    label_mean: float
    rows: RowCounts
    config_hash: str
    shards: dict[str, list[str]]
    input_fingerprint: str = ""  # hash of the input files' paths, sizes and mtimes ("" for generated data)
    statistics: dict = field(default_factory=dict)  # the statistics pass: distinct and kept values, peak rows/bytes

    @property
    def num_features(self) -> int:
        return self.features.num_features

    def vocab_sizes(self) -> dict[str, int]:
        """Features per field (kept values + OOV for categorical fields, 1 for a numerical field)."""
        counts = np.bincount(self.features.field_of, minlength=self.features.num_fields)
        return {spec.name: int(n) for spec, n in zip(self.features.fields, counts)}

    def split_paths(self, split: str) -> list[str]:
        return [storage.join(self.directory, p) for p in self.shards[split]]

    def load_split(self, split: str) -> EncodedSplit:
        """Read one split into memory (in-process training and tests; the Ray layers stream instead)."""
        paths = self.split_paths(split)
        if not paths:
            f = self.features.num_fields
            return EncodedSplit(np.zeros((0, f), np.int64), np.zeros((0, f), np.float32), np.zeros(0, np.float32))
        table = pa.concat_tables([pq.read_table(storage.parquet_source(p)) for p in paths])
        return split_from_columns({c: table.column(c).to_numpy() for c in table.column_names},
                                  self.features.num_fields)

    def write_meta(self) -> None:
        meta = {
            "num_features": self.num_features,
            "fields": [{"name": s.name, "kind": s.kind} for s in self.features.fields],
            "task": self.task,
            "label_mean": self.label_mean,
            "rows": asdict(self.rows),
            "config_hash": self.config_hash,
            "shards": self.shards,
            "frequencies": "frequencies.parquet",
            "vocab_sizes": self.vocab_sizes(),
            "input_fingerprint": self.input_fingerprint,
            "statistics": self.statistics,
        }
        storage.write_text(storage.join(self.directory, META_FILE), json.dumps(meta, indent=1))

    @staticmethod
    def load(directory: str | Path) -> "PreparedData":
        directory = storage.local_path(directory)
        meta = json.loads(storage.read_text(storage.join(directory, META_FILE)))
        return PreparedData(
            directory=directory,
            features=FeatureSpace.load(directory),
            task=meta["task"],
            label_mean=float(meta["label_mean"]),
            rows=RowCounts(**meta["rows"]),
            config_hash=meta["config_hash"],
            shards={k: list(meta["shards"].get(k, [])) for k in SPLIT_NAMES},
            input_fingerprint=meta.get("input_fingerprint", ""),
            statistics=meta.get("statistics", {}),
        )
