"""The per-worker cached encoder equals FeatureSpace.encode (unseen values, missing values, numerical fields)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from autosrh_ray.data.encode import Encoder
from autosrh_ray.features import FeatureSpace, FieldSpec, NumericStats


def test_encoder_equals_feature_space_encode():
    rng = np.random.default_rng(3)
    fields = [FieldSpec("x", "numerical"), FieldSpec("a", "categorical"), FieldSpec("b", "categorical")]
    train_a = rng.choice(["p", "q", "r", "s", ""], 500)
    counts_a = dict(zip(*np.unique(train_a, return_counts=True)))
    space = FeatureSpace.from_counts(fields, [None, {str(k): int(v) for k, v in counts_a.items()}, {}],
                                     [NumericStats.from_sums(3, 6.0, 14.0), None, None], min_count=90)
    columns = {"x": pa.array([1.0, None, 3.5, 2.0]), "a": pa.array(["p", "zz", None, "s"]),
               "b": pa.array(["u", "v", "", None])}
    want_ids, want_values = space.encode(columns)
    for large_vocab in (0, 10**9):  # every field through the cached index / every field through encode_column
        ids, values = Encoder(space, large_vocab=large_vocab).encode(columns)
        assert np.array_equal(ids, want_ids) and np.array_equal(values, want_values)
    assert len(set(ids[:, 2])) == 1  # a field with an empty vocabulary maps everything to its OOV id
