"""Deterministic train/valid/test assignment from a hash of (row position in the input, seed).

Depends only on the row's position and the seed, never on shard, block or worker counts, so the same config
gives the same split on a laptop and on a cluster. Pure numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def split_of(positions: np.ndarray, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Split code (0 train, 1 valid, 2 test) of each global row position, shape like ``positions``."""
    pos = np.asarray(positions, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(pos ^ _splitmix64(np.full(pos.shape, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)))
    u = (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    cut_train, cut_valid = fractions[0], fractions[0] + fractions[1]
    return np.where(u < cut_train, TRAIN, np.where(u < cut_valid, VALID, TEST)).astype(np.int8)


def in_alpha_slice(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each encoded training row (ids (N, F)) belongs to the slice that fits α (``search.alpha_data:
    train``): a hash of the row's ids and ``seed`` below ``fraction``. Depends only on the row's content, so the
    same rows are chosen in-process and in any Ray Data task, whatever the order, shard or worker."""
    ids = np.asarray(ids)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(ids.shape[0], (seed ^ 0x5A17) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
        for f in range(ids.shape[1]):
            key = _splitmix64(key ^ ids[:, f].astype(np.uint64))
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction
