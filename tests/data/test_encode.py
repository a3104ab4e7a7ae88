"""The kept hash index for large vocabularies encodes like pc.index_in (unseen values, missing values, numerical
fields)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from autosrh_ray.engine.features import FeatureSpace, FieldSpec, NumericStats


def test_large_vocabulary_index_equals_index_in():
    rng = np.random.default_rng(3)
    fields = [FieldSpec("x", "numerical"), FieldSpec("a", "categorical"), FieldSpec("b", "categorical")]
    train_a = rng.choice(["p", "q", "r", "s", ""], 500)
    counts_a = dict(zip(*np.unique(train_a, return_counts=True)))
    space = FeatureSpace.from_counts(fields, [None, {str(k): int(v) for k, v in counts_a.items()}, {}],
                                     [NumericStats.from_sums(3, 6.0, 14.0), None, None], min_count=90)
    columns = {"x": pa.array([1.0, None, 3.5, 2.0]), "a": pa.array(["p", "zz", None, "s"]),
               "b": pa.array(["u", "v", "", None])}
    want_ids, want_values = replace(space, large_vocab=10**9).encode(columns)  # every field through index_in
    indexed = replace(space, large_vocab=0)  # every field through the kept index
    for _ in range(2):  # the second call reuses the built index
        ids, values = indexed.encode(columns)
        assert np.array_equal(ids, want_ids) and np.array_equal(values, want_values)
    assert set(indexed.encoder()._lookups) == {1}  # field a was looked up through the kept index (b has no values)
    assert len(set(ids[:, 2])) == 1  # a field with an empty vocabulary maps everything to its OOV id
