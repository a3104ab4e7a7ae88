"""What encoding raw columns needs of a :class:`~autosrh_ray.engine.features.FeatureSpace`, in compact Arrow form.

Data tasks receive this rather than the feature space: each field's kept values are one Arrow string array (a few
bytes per value) instead of Python strings, so shipping it to a worker and holding it there costs little, and the
small fields' ``pc.index_in`` value sets are built once, not per call. No Ray import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING_TOKEN = ""  # a missing categorical value is its own token
LARGE_VOCAB = 100_000  # fields with more kept values look values up in a hash index built once and kept


@dataclass
class FieldCodes:
    """One field's encoding: categorical (kept values → their global ids, else the OOV id) or numerical (one
    id, values standardised by ``mean``/``std``)."""

    id: int  # the OOV id (categorical) or the field's feature id (numerical)
    values: Optional[pa.StringArray] = None  # categorical: kept values
    ids: Optional[np.ndarray] = None  # categorical: their global ids (int64)
    mean: float = 0.0
    std: float = 1.0

    @property
    def categorical(self) -> bool:
        return self.values is not None


@dataclass
class FeatureEncoder:
    """Encodes a table given as {field name: column} to global ids (N, F) int64 and values (N, F) float32."""

    names: list[str]
    fields: list[FieldCodes]
    large_vocab: int = LARGE_VOCAB
    _lookups: dict = field(default_factory=dict, repr=False, compare=False)  # field index → pandas Index

    def encode_column(self, f: int, column) -> tuple[np.ndarray, np.ndarray]:
        """Encode one field's column to (global ids int64, values float32), both shape (N,).

        Categorical columns hold strings (null = missing token); unseen values map to the field's OOV id.
        Numerical columns hold floats (NaN/null = missing → value 0 after standardisation).
        """
        codes = self.fields[f]
        if codes.categorical:
            arr = pa.array(column) if not isinstance(column, (pa.Array, pa.ChunkedArray)) else column
            pos = self._positions(f, pc.fill_null(pc.cast(arr, pa.string()), MISSING_TOKEN))
            ids = np.full(len(pos), codes.id, dtype=np.int64)
            found = pos >= 0
            ids[found] = codes.ids[pos[found]]
            return ids, np.ones(len(ids), dtype=np.float32)
        if isinstance(column, (pa.Array, pa.ChunkedArray)):
            column = column.to_numpy(zero_copy_only=False)
        x = np.asarray(column, dtype=np.float64)
        values = np.where(np.isnan(x), 0.0, (x - codes.mean) / codes.std).astype(np.float32)
        return np.full(len(x), codes.id, dtype=np.int64), values

    def _positions(self, f: int, text) -> np.ndarray:
        """Position of each value in field f's kept values, -1 if not kept.

        ``pc.index_in`` builds its hash table on every call, which dominates for large vocabularies (Criteo has
        fields with millions of values): those get a pandas index built once and kept on this object (so a
        worker that holds the encoder builds it once)."""
        values = self.fields[f].values
        if len(values) <= self.large_vocab:
            pos = pc.index_in(text, value_set=values)
            return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if f not in self._lookups:
            import pandas as pd

            self._lookups[f] = pd.Index(values.to_numpy(zero_copy_only=False))
        return self._lookups[f].get_indexer(text.to_numpy(zero_copy_only=False)).astype(np.int64)

    def encode(self, columns: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.encode_column(f, columns[name]) for f, name in enumerate(self.names)]
        return np.stack([p[0] for p in pairs], axis=1), np.stack([p[1] for p in pairs], axis=1)
