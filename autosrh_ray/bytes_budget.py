"""Budgets in bytes: how many of the best entries fit in a number of embedding bytes at a given precision.

The bytes are the artifact's (:func:`autosrh_ray.artifact.compact_embedding`): a bitmap over the M features, the
cheaper index (a uint8 count per kept row and a uint8 dimension per entry, or a K-bit mask per kept row) and the
values at their precision (:mod:`autosrh_ray.quantize`: fp32 4 B, fp16 2 B, int8 1 B, int4 ½ B per value; int8
and int4 4 B of fp16 scale and bias per kept row). They depend on how many features keep anything, so the count
is found on the scores themselves: the largest ``n`` whose top-``n`` entries (as
:func:`~autosrh_ray.prune.topk_mask` keeps them) fit. Pure PyTorch.
"""
from __future__ import annotations

import math

import torch

from .prune import topk_mask

VALUE_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ROW_BYTES = {"fp32": 0, "fp16": 0, "int8": 4, "int4": 4}  # fp16 scale and bias per kept row


def embedding_bytes(kept: int, rows: int, num_features: int, dim: int, precision: str) -> int:
    """Bytes of an artifact's embedding with ``kept`` entries in ``rows`` kept rows (features keeping anything)."""
    bits = VALUE_BITS[precision]
    values = math.ceil(kept * bits / 8) + ROW_BYTES[precision] * rows
    return math.ceil(num_features / 8) + min(rows + kept, rows * math.ceil(dim / 8)) + values


def kept_rows(scores: torch.Tensor, keep: int) -> int:
    """Features (rows of ``scores``, (M, K)) with at least one of the ``keep`` entries pruning keeps."""
    return int(topk_mask(scores, keep).any(dim=1).sum())


def kept_for_bytes(scores: torch.Tensor, budget: int, precision: str) -> int:
    """The most entries whose artifact embedding at ``precision`` takes at most ``budget`` bytes (0 if not even
    the empty table fits; bytes grow with the entries kept, so a bisection finds it)."""
    m, k = scores.shape

    def size(n: int) -> int:
        return embedding_bytes(n, kept_rows(scores, n), m, k, precision)

    lo, hi = 0, m * k
    if size(hi) <= budget:
        return hi
    while lo < hi:  # size(lo) <= budget < size(hi + 1) once it ends
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
