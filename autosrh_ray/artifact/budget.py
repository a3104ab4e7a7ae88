"""Budgets in bytes: how many of the best entries fit in a number of embedding bytes at a given precision.

The bytes are the artifact's (:func:`autosrh_ray.artifact.format.compact_embedding`): the cheaper of a bitmap over the
features up to the last that keeps anything (frequency-ordered ids: the rare tail a tight budget drops costs
nothing) and the kept ids (4 B each), the cheaper index (a uint8 count per kept row and a uint8 dimension per
entry, or a K-bit mask per kept row) and the values at their precision (:mod:`autosrh_ray.engine.quantize`: fp32 4 B,
fp16 2 B, int8 1 B, int4 ½ B per value; int8 and int4 4 B of fp16 scale and bias per kept row). They depend on
how many features keep anything, so the count is found on the scores themselves: the largest ``n`` whose
top-``n`` entries (as :func:`~autosrh_ray.engine.prune.topk_mask` keeps them) fit. With a precision per frequency
block, each stored segment pays its own values, scales and biases. Pure PyTorch.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..config import ConfigError, PruneConfig
from ..engine.precision_plan import Precision, segments
from ..engine.prune import BYTE_PRECISIONS, topk_mask

VALUE_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ROW_BYTES = {"fp32": 0, "fp16": 0, "int8": 4, "int4": 4}  # fp16 scale and bias per kept row
LOSSLESS_INT8_DIMS = 4  # int8 (d + 4 B per row) takes fewer bytes than fp16 (2d) once a row keeps more dims


def embedding_bytes(kept: int | Sequence[int], rows: int | Sequence[int], bitmap_features: int, dim: int,
                    precision: str | Sequence[str]) -> int:
    """Bytes of an artifact's embedding with ``kept`` entries in ``rows`` kept rows (features keeping anything) —
    or, per stored segment, ``kept``, ``rows`` and ``precision`` listed segment by segment; ``bitmap_features``:
    the features the bitmap covers, up to the last that keeps anything (:func:`bitmap_span`)."""
    if isinstance(precision, str):
        kept, rows, precision = [kept], [rows], [precision]
    values = sum(math.ceil(n * VALUE_BITS[p] / 8) + ROW_BYTES[p] * r for n, r, p in zip(kept, rows, precision))
    n, r = sum(kept), sum(rows)
    return min(math.ceil(bitmap_features / 8), 4 * r) + min(r + n, r * math.ceil(dim / 8)) + values


def bitmap_span(counts: torch.Tensor | np.ndarray) -> int:
    """The features the artifact's bitmap covers for kept dims ``counts`` (M,): up to the last feature that keeps
    anything (features past it keep nothing and cost nothing), 0 when none does."""
    kept = np.flatnonzero(np.asarray(counts) > 0)
    return int(kept[-1]) + 1 if kept.size else 0


def _size(scores: torch.Tensor, keep: int, spans: list[tuple[int, int, str]]) -> int:
    counts = topk_mask(scores, keep).sum(dim=1)
    kept = [int(counts[a:b].sum()) for a, b, _ in spans]
    rows = [int((counts[a:b] > 0).sum()) for a, b, _ in spans]
    return embedding_bytes(kept, rows, bitmap_span(counts), scores.shape[1], [p for _, _, p in spans])


def largest_within(size: Callable[[int], int], budget: int, most: int) -> int:
    """The largest ``n`` in 0…``most`` with ``size(n) <= budget`` (0 if none; ``size`` grows with ``n``, so a
    bisection finds it)."""
    lo, hi = 0, most
    if size(hi) <= budget:
        return hi
    while lo < hi:  # size(lo) <= budget < size(hi + 1) once it ends
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def kept_for_bytes(scores: torch.Tensor, budget: int, precision: Precision,
                   block_starts: Sequence[int] = (0,)) -> int:
    """The most entries whose artifact embedding at ``precision`` (one, or one per block starting at
    ``block_starts``) takes at most ``budget`` bytes (0 if not even the empty table fits)."""
    spans = segments(precision, block_starts, scores.shape[0])
    return largest_within(lambda n: _size(scores, n, spans), budget, scores.numel())


def scheme_bytes(feature_dims: np.ndarray, dim: int, precision: Precision, block_starts: Sequence[int] = (0,),
                 projection_groups: int = 0) -> int:
    """Bytes of the artifact's embedding for a fixed scheme (feature i keeps its first ``feature_dims[i]`` dims) at
    ``precision`` — with ``projection_groups`` K×K fp32 projections (MDE: one per block) and the group of every
    feature when it has them: per feature (uint8 while the groups fit, else int32) or, as MDE's blocks are id
    ranges, one run per block (its first id, int32, and its group), whichever is smaller."""
    counts = np.asarray(feature_dims, dtype=np.int64)
    m = counts.size
    spans = segments(precision, block_starts, m)
    kept = [int(counts[a:b].sum()) for a, b, _ in spans]
    rows = [int((counts[a:b] > 0).sum()) for a, b, _ in spans]
    out = embedding_bytes(kept, rows, bitmap_span(counts), dim, [p for _, _, p in spans])
    if projection_groups:
        value = 1 if projection_groups <= 256 else 4
        out += projection_groups * dim * dim * 4 + min(m * value, projection_groups * (4 + value))
    return out


def mixed_precision(scores: torch.Tensor, budget: int, block_starts: Sequence[int], rare: str) -> tuple[str, ...]:
    """A precision per frequency block for a byte budget, guided by the dimensions the blocks keep: at the count
    that fits ``budget`` at fp16, a block whose kept rows average more than :data:`LOSSLESS_INT8_DIMS` dims is
    stored at int8 (fewer bytes, error ≤ range/510 per value), else at fp16; with ``rare="int4"`` the rarer half of
    the blocks drop to int4 where it takes fewer bytes than their fp16 (more than 8/3 dims a row)."""
    m = scores.shape[0]
    counts = topk_mask(scores, kept_for_bytes(scores, budget, "fp16")).sum(dim=1)
    plan = []
    ends = [*block_starts[1:], m]
    for b, (first, end) in enumerate(zip(block_starts, ends)):
        block = counts[first:end]
        rows = int((block > 0).sum())
        mean = float(block.sum()) / rows if rows else 0.0
        if rare == "int4" and b >= len(block_starts) / 2 and mean * 2 > mean / 2 + ROW_BYTES["int4"]:
            plan.append("int4")
        else:
            plan.append("int8" if mean > LOSSLESS_INT8_DIMS else "fp16")
    return tuple(plan)


def smallest_embedding_bytes(dim: int, precisions: Sequence[str]) -> int:
    """The fewest bytes any artifact embedding with an entry kept can take at one of ``precisions``: one entry of
    the first feature (a 1-byte bitmap, its row's index, its value with a quantised row's scale and bias)."""
    return min(embedding_bytes(1, 1, 1, dim, p) for p in precisions)


def check_byte_budgets(prune_config: PruneConfig, dim: int, num_features: Optional[int] = None) -> None:
    """Refuse, before any training, a byte budget that no artifact can meet: fewer bytes than one kept entry takes
    at the cheapest precision the budget's candidates may use (:func:`smallest_embedding_bytes`). ``prune.bytes``
    is checked from the config alone; ``prune.bytes_cr`` once the feature count M is known.

    Raises:
        ConfigError: naming ``prune.bytes`` or ``prune.bytes_cr``, the budget's bytes and the smallest size.
    """
    chosen = prune_config.precision
    precisions = BYTE_PRECISIONS if chosen == "auto" else tuple(chosen) if isinstance(chosen, list) else (chosen,)
    smallest = smallest_embedding_bytes(dim, precisions)
    asked = [("prune.bytes", b, f"{b:,} bytes") for b in prune_config.byte_budgets]
    if num_features is not None:
        dense = num_features * dim * 4
        asked += [("prune.bytes_cr", int(dense / c), f"{c:g} leaves {int(dense / c):,} bytes (M·K·4 = {dense:,} ÷ it)")
                  for c in prune_config.bytes_crs]
    for key, size, what in asked:
        if size < smallest:
            raise ConfigError(key, f"{what}: no embedding fits; the smallest artifact (one entry kept, K = {dim}, "
                                   f"{'/'.join(precisions)}) takes {smallest:,} bytes")
