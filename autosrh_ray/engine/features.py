"""The feature space: fields, frequency-ordered global ids, OOV features, numerical fields, frequency blocks.

A *feature* is one categorical value of one field, one OOV bucket per categorical field, or one numerical
field embedded with ``numeric: scale``. Global ids sort all features by
``(descending training frequency, field index, value as a string)``, so the L frequency blocks are contiguous
id ranges. Counting happens elsewhere (in-process or on Ray Data); this module turns counts into ids
and encodes columns with them. No Ray import here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import storage
from .feature_encoder import LARGE_VOCAB, MISSING_TOKEN, FeatureEncoder, FieldCodes

OOV_VALUE = "<OOV>"  # the value string of a field's OOV feature (used for ordering ties and in frequencies files)


@dataclass(frozen=True)
class FieldSpec:
    """One input field. ``categorical``: one feature per value (+ OOV); ``numerical``: one scaled feature."""

    name: str
    kind: Literal["categorical", "numerical"]


@dataclass(frozen=True)
class NumericStats:
    """Training-split statistics of one numerical field (count of non-missing rows, mean, std, and the range
    ``low``..``high`` of its values: None when not recorded, as in data prepared before they were)."""

    count: int
    mean: float
    std: float
    low: Optional[float] = None
    high: Optional[float] = None

    @staticmethod
    def from_sums(count: int, total: float, total_sq: float, low: Optional[float] = None,
                  high: Optional[float] = None) -> "NumericStats":
        """From partial sums (mergeable across shards) and the range's partial min/max. std falls back to 1 for
        constant or empty fields."""
        if count == 0:
            return NumericStats(0, 0.0, 1.0)
        mean = total / count
        var = max(total_sq / count - mean * mean, 0.0)
        std = math.sqrt(var)
        low, high = (None, None) if low is None or high is None else (float(low), float(high))
        return NumericStats(int(count), float(mean), float(std) if std > 1e-12 else 1.0, low, high)


@dataclass
class FieldVocab:
    """A categorical field's kept values, their global ids, and its OOV id."""

    values: list[str]
    ids: np.ndarray
    oov_id: int


def bucketize(x: np.ndarray) -> pa.StringArray:
    """Criteo-style numeric tokens: ``L<floor(ln(x)^2)>`` for x > 2, ``<int(x)>`` for x <= 2, "" if missing (NaN).

    The ``L`` prefix keeps the two ranges from colliding (floor(ln(3)^2) = 1 = int(1)). Vectorised: the integer
    codes in numpy, their text by Arrow's cast and join kernels (no Python object per row).
    """
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    big = ok & (x > 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        code = np.where(big, np.floor(np.log(np.where(big, x, 3.0)) ** 2), np.trunc(np.where(ok, x, 0.0)))
    text = pc.cast(pa.array(code.astype(np.int64)), pa.string())
    text = pc.if_else(pa.array(big), pc.binary_join_element_wise("L", text, ""), text)
    return pc.if_else(pa.array(ok), text, MISSING_TOKEN)


def block_starts(num_features: int, num_blocks: int, boundaries: Optional[Sequence[int]] = None) -> np.ndarray:
    """First id of each of the L blocks: equal ranges, the first ``M mod L`` one larger, or explicit boundaries."""
    if boundaries is not None:
        return np.array([0, *boundaries], dtype=np.int64)
    base, extra = divmod(num_features, num_blocks)
    sizes = np.full(num_blocks, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def block_index(num_features: int, num_blocks: int, boundaries: Optional[Sequence[int]] = None) -> np.ndarray:
    """Block of every global id, shape (M,)."""
    starts = block_starts(num_features, num_blocks, boundaries)
    return (np.searchsorted(starts, np.arange(num_features), side="right") - 1).astype(np.int64)


@dataclass
class FeatureSpace:
    """Every field's vocabulary and the global id order; the one object that knows M.

    ``frequencies[i]`` is feature i's training frequency (non-increasing in i), ``field_of[i]`` its field.
    """

    fields: list[FieldSpec]
    vocabs: list[Optional[FieldVocab]]
    numeric_ids: list[Optional[int]]
    numeric_stats: list[Optional[NumericStats]]
    frequencies: np.ndarray
    field_of: np.ndarray
    feature_values: list[str]
    large_vocab: int = field(default=LARGE_VOCAB, compare=False)
    _encoder: Optional[FeatureEncoder] = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_features(self) -> int:
        return int(self.frequencies.shape[0])

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @staticmethod
    def from_counts(
        fields: Sequence[FieldSpec],
        value_counts: Sequence[Optional[Mapping[str, int]]],
        numeric_stats: Sequence[Optional[NumericStats]],
        min_count: int = 1,
    ) -> "FeatureSpace":
        """Assign global ids from training counts: ``value_counts[f]`` maps each value of categorical field f to
        its training count (None for numerical fields); see :meth:`from_count_table`."""
        f_idx, values, counts = [], [], []
        for f, vc in enumerate(value_counts):
            for value, count in (vc or {}).items():
                f_idx.append(f)
                values.append(str(value))
                counts.append(int(count))
        table = pa.table({"field": pa.array(f_idx, pa.int32()), "value": pa.array(values, pa.string()),
                          "count": pa.array(counts, pa.int64())})
        return FeatureSpace.from_count_table(fields, table, numeric_stats, min_count)

    @staticmethod
    def from_count_table(fields: Sequence[FieldSpec], counts: pa.Table,
                         numeric_stats: Sequence[Optional[NumericStats]], min_count: int = 1,
                         folded: Optional[np.ndarray] = None) -> "FeatureSpace":
        """Assign global ids from a table of training counts, one row per (field, value) of a categorical field
        (columns ``field`` int, ``value`` string, ``count`` int).

        Ids follow (descending frequency, field, value); values seen fewer than ``min_count`` times fold into
        their field's OOV feature (value ``<OOV>``, frequency = the rows mapped to it), which every categorical
        field has; a numerical field is one feature whose frequency is its count of present values. Sorted and
        grouped with Arrow kernels (no Python object per key but the values' strings at the end). ``folded``: per
        field, training rows of values already folded into its OOV before the table was built (they are not in
        ``counts``).
        """
        num = len(fields)
        counts = counts.select(["field", "value", "count"])
        count = counts.column("count").to_numpy()
        field_idx = counts.column("field").to_numpy().astype(np.int64)
        kept = count >= min_count
        oov = np.bincount(field_idx[~kept], weights=count[~kept], minlength=num).astype(np.int64)
        if folded is not None:
            oov += np.asarray(folded, dtype=np.int64)
        categorical = [f for f, spec in enumerate(fields) if spec.kind == "categorical"]
        numerical = [f for f, spec in enumerate(fields) if spec.kind != "categorical"]
        extra_freq = [int(oov[f]) for f in categorical] + [
            int(numeric_stats[f].count) if numeric_stats[f] else 0 for f in numerical]
        keys = pa.concat_tables([
            pa.table({"neg": pc.negate(counts.column("count").filter(pa.array(kept))),
                      "field": pa.array(field_idx[kept].astype(np.int32)),
                      "value": counts.column("value").filter(pa.array(kept)),
                      "kind": pa.array(np.zeros(int(kept.sum()), np.int8))}),
            pa.table({"neg": pa.array([-c for c in extra_freq], pa.int64()),
                      "field": pa.array(categorical + numerical, pa.int32()),
                      "value": pa.array([OOV_VALUE] * len(categorical) + [fields[f].name for f in numerical],
                                        pa.string()),
                      "kind": pa.array([1] * len(categorical) + [2] * len(numerical), pa.int8())}),
        ]).sort_by([("neg", "ascending"), ("field", "ascending"), ("value", "ascending"), ("kind", "ascending")])
        frequencies = -keys.column("neg").to_numpy()
        field_of = keys.column("field").to_numpy().astype(np.int32)
        kind = keys.column("kind").to_numpy()
        feature_values = keys.column("value").to_pylist()
        order = np.argsort(field_of, kind="stable")  # ids grouped by field, in id order within each
        bounds = np.searchsorted(field_of[order], np.arange(num + 1))
        vocabs: list[Optional[FieldVocab]] = []
        numeric_ids: list[Optional[int]] = [None] * num
        for f, spec in enumerate(fields):
            ids = order[bounds[f]:bounds[f + 1]]
            if spec.kind == "categorical":
                values = ids[kind[ids] == 0]
                vocabs.append(FieldVocab([feature_values[i] for i in values], values.astype(np.int64),
                                         int(ids[kind[ids] == 1][0])))
            else:
                vocabs.append(None)
                numeric_ids[f] = int(ids[0])
        return FeatureSpace(
            fields=list(fields),
            vocabs=vocabs,
            numeric_ids=numeric_ids,
            numeric_stats=[s if spec.kind == "numerical" else None for s, spec in zip(numeric_stats, fields)],
            frequencies=frequencies.astype(np.int64),
            field_of=field_of,
            feature_values=feature_values,
        )

    # -- encoding -----------------------------------------------------------------------------------------------
    def encoder(self) -> FeatureEncoder:
        """What encoding needs of this space (compact, built once and kept): what data tasks receive."""
        if self._encoder is None:
            codes = []
            for f, spec in enumerate(self.fields):
                vocab = self.vocabs[f]
                if vocab is not None:
                    codes.append(FieldCodes(vocab.oov_id, pa.array(vocab.values, pa.string()), vocab.ids))
                else:
                    stats = self.numeric_stats[f]
                    codes.append(FieldCodes(int(self.numeric_ids[f]), mean=stats.mean, std=stats.std))
            self._encoder = FeatureEncoder([spec.name for spec in self.fields], codes, self.large_vocab)
        return self._encoder

    def encode(self, columns: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
        """Encode a table given as {field name: column} to ids (N, F) int64 and values (N, F) float32
        (:class:`~autosrh_ray.engine.feature_encoder.FeatureEncoder`)."""
        return self.encoder().encode(columns)

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict[str, str]:
        """Write ``features.json`` (fields, numeric stats) and ``frequencies.parquet`` (one row per feature)."""
        storage.makedirs(directory)
        meta = {
            "fields": [{"name": s.name, "kind": s.kind} for s in self.fields],
            "numeric_stats": [None if s is None else [s.count, s.mean, s.std, s.low, s.high]
                              for s in self.numeric_stats],
            "num_features": self.num_features,
        }
        storage.write_text(storage.join(directory, "features.json"), json.dumps(meta, indent=1))
        table = pa.table({
            "id": pa.array(np.arange(self.num_features, dtype=np.int64)),
            "field": pa.array([self.fields[f].name for f in self.field_of]),
            "field_index": pa.array(self.field_of),
            "value": pa.array(self.feature_values, type=pa.string()),
            "kind": pa.array(self.feature_kinds()),
            "frequency": pa.array(self.frequencies),
        })
        fs, path = storage.resolve(storage.join(directory, "frequencies.parquet"))
        pq.write_table(table, path, filesystem=fs)
        return {"features": "features.json", "frequencies": "frequencies.parquet"}

    def feature_kinds(self) -> list[str]:
        """``value``, ``oov`` or ``numeric`` for every global id."""
        kinds = ["value"] * self.num_features
        for vocab, nid in zip(self.vocabs, self.numeric_ids):
            if vocab is not None:
                kinds[vocab.oov_id] = "oov"
            if nid is not None:
                kinds[nid] = "numeric"
        return kinds

    @staticmethod
    def load(directory: str | Path) -> "FeatureSpace":
        meta = json.loads(storage.read_text(storage.join(directory, "features.json")))
        fields = [FieldSpec(d["name"], d["kind"]) for d in meta["fields"]]
        stats = [None if s is None else NumericStats(int(s[0]), float(s[1]), float(s[2]), *s[3:5])
                 for s in meta["numeric_stats"]]
        table = pq.read_table(storage.parquet_source(storage.join(directory, "frequencies.parquet")))
        field_of = table.column("field_index").to_numpy().astype(np.int32)
        values = table.column("value").to_pylist()
        kinds = np.asarray(table.column("kind").to_pylist())
        frequencies = table.column("frequency").to_numpy().astype(np.int64)
        vocabs: list[Optional[FieldVocab]] = []
        numeric_ids: list[Optional[int]] = [None] * len(fields)
        for f, spec in enumerate(fields):
            gids = np.flatnonzero(field_of == f)
            if spec.kind == "numerical":
                numeric_ids[f] = int(gids[0])
                vocabs.append(None)
                continue
            oov_id = int(gids[kinds[gids] == "oov"][0])
            kept = gids[kinds[gids] == "value"]
            vocabs.append(FieldVocab([values[g] for g in kept], kept.astype(np.int64), oov_id))
        return FeatureSpace(fields, vocabs, numeric_ids, stats, frequencies, field_of, values)
