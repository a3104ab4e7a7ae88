"""Feature space: id order (frequency, field, value), OOV, numerical fields, blocks, bucketize."""
import math

import numpy as np
import pytest

from autosrh_ray.engine.features import (OOV_VALUE, FeatureSpace, FieldSpec, NumericStats, block_index, block_starts,
                                         bucketize)


def make_space(min_count=2):
    fields = [FieldSpec("a", "categorical"), FieldSpec("x", "numerical"), FieldSpec("b", "categorical")]
    counts = [{"p": 5, "q": 3, "r": 1, "s": 1}, None, {"q": 5, "z": 3, "y": 3, "w": 1}]
    stats = [None, NumericStats(4, 0.5, 2.0), None]
    return FeatureSpace.from_counts(fields, counts, stats, min_count=min_count)


def test_ids_sorted_by_frequency_then_field_then_value():
    space = make_space()
    listed = list(zip(space.frequencies.tolist(), space.field_of.tolist(), space.feature_values))
    # brute force: every feature with its key, sorted
    expected = sorted([(5, 0, "p"), (3, 0, "q"), (2, 0, OOV_VALUE), (4, 1, "x"), (5, 2, "q"), (3, 2, "y"),
                       (3, 2, "z"), (1, 2, OOV_VALUE)], key=lambda t: (-t[0], t[1], t[2]))
    assert listed == expected
    assert np.all(np.diff(space.frequencies) <= 0)


def test_encoding_maps_rare_and_unseen_values_to_oov_and_scales_numbers():
    space = make_space()
    ids, values = space.encode({"a": ["p", "r", "never", None], "x": [2.5, np.nan, 0.5, 4.5],
                                "b": ["w", "q", "y", "z"]})
    oov_a = space.vocabs[0].oov_id
    assert ids[1, 0] == oov_a and ids[2, 0] == oov_a  # r (count 1 < 2) and unseen
    assert space.feature_values[ids[0, 0]] == "p"
    assert ids[3, 0] == oov_a  # missing is the "" token, unseen in training → OOV
    assert ids[0, 2] == space.vocabs[2].oov_id
    assert np.allclose(values[:, 1], [1.0, 0.0, 0.0, 2.0])  # (x − 0.5) / 2, missing → 0
    assert np.all(values[:, [0, 2]] == 1.0)


def test_save_load_round_trip(tmp_path):
    space = make_space(min_count=1)
    space.save(tmp_path)
    back = FeatureSpace.load(tmp_path)
    cols = {"a": ["p", "s", "zz"], "x": [1.0, 2.0, np.nan], "b": ["w", "y", "q"]}
    for a, b in zip(space.encode(cols), back.encode(cols)):
        assert np.array_equal(a, b)
    assert np.array_equal(space.frequencies, back.frequencies)


@pytest.mark.parametrize("m,l", [(10, 3), (7, 7), (100, 6), (5, 1)])
def test_blocks_are_equal_ranges_first_remainder_larger(m, l):
    b = block_index(m, l)
    sizes = np.bincount(b, minlength=l)
    assert sizes.sum() == m and np.all(np.diff(b) >= 0)
    assert list(sizes) == [m // l + (1 if i < m % l else 0) for i in range(l)]
    assert list(block_starts(m, l, [2, 5])) == [0, 2, 5]


def test_bucketize_follows_criteo_rule_without_collisions():
    x = np.array([np.nan, -1.5, 0.0, 1.0, 2.0, 3.0, 100.0])
    out = bucketize(x).to_pylist()
    assert out == ["", "-1", "0", "1", "2", f"L{math.floor(math.log(3) ** 2)}", f"L{math.floor(math.log(100) ** 2)}"]
    assert out[3] != out[5]  # int(1) and floor(ln(3)^2) are both 1 but stay distinct tokens
