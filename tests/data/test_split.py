"""Row → train/valid/test assignment: the configured 8:1:1 shares within binomial noise, and the split is a
function of the seed (the same seed, the same split; another seed, another split)."""
from __future__ import annotations

import numpy as np
import pytest

from autosrh_ray.data.split import SPLIT_NAMES, split_of

from .helpers import config

N = 100_000


def test_default_split_is_8_1_1_within_binomial_noise():
    ds = config().dataset
    counts = np.bincount(split_of(np.arange(N), ds.seed, ds.split), minlength=3)
    for name, count, share in zip(SPLIT_NAMES, counts, (0.8, 0.1, 0.1)):
        sigma = np.sqrt(N * share * (1 - share))
        assert abs(count - N * share) < 4 * sigma, (name, count)


@pytest.mark.parametrize("seed", [0, 7, 2026])
def test_same_seed_same_split_another_seed_another_split(seed):
    positions, fractions = np.arange(N), config().dataset.split
    split = split_of(positions, seed, fractions)
    assert np.array_equal(split_of(positions, seed, fractions), split)
    assert np.array_equal(split_of(positions[::-1], seed, fractions), split[::-1])  # per row, not per order
    other = split_of(positions, seed + 1, fractions)
    # independent assignments disagree on 1 − (0.8² + 0.1² + 0.1²) = 34 % of rows
    assert 0.3 < np.mean(other != split) < 0.38
