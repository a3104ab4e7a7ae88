"""Budgets: what a final model may keep (``prune.cr``, ``prune.params``) or weigh (``prune.bytes_cr``,
``prune.bytes``), and how many of the best entries fit in a number of embedding bytes at a given precision.

The bytes are the artifact's, counted by :mod:`.layout` (the writer decides by the same functions). They depend on
how many features keep anything, so the count is found on the scores themselves: the largest ``n`` whose
top-``n`` entries (as :func:`~autosrh_ray.engine.prune.topk_mask` keeps them) fit. With a precision per frequency
block, each stored segment pays its own values, scales and biases.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..config import ConfigError, PruneConfig
from ..engine.precision_plan import Precision, precision_name, segments
from ..engine.prune import kept_count, topk_mask
from ..engine.quantize import LEVELS
from .layout import (ROW_BYTES, bitmap_span, block_starts_bytes, group_value_bytes, groups_bytes, index_bytes,
                     projection_bytes, rows_bytes, values_bytes)

LOSSLESS_INT8_DIMS = 4  # int8 (d + 4 B per row) takes fewer bytes than fp16 (2d) once a row keeps more dims


def embedding_bytes(kept: int | Sequence[int], rows: int | Sequence[int], bitmap_features: int, dim: int,
                    precision: str | Sequence[str], int_scales: str = "row",
                    blocks: int | Sequence[int] = 1) -> int:
    """Bytes of an artifact's embedding with ``kept`` entries in ``rows`` kept rows (features keeping anything) —
    or, per stored segment, ``kept``, ``rows``, ``precision`` and its frequency ``blocks`` listed segment by
    segment; ``bitmap_features``: the features the bitmap covers, up to the last that keeps anything
    (:func:`bitmap_span`); ``int_scales``: int8/int4 scales per row or per block and dimension."""
    if isinstance(precision, str):
        kept, rows, precision = [kept], [rows], [precision]
    if isinstance(blocks, int):  # the row layout never reads it
        blocks = [blocks] * len(precision)
    values = sum(values_bytes(n, r, p, int_scales, b, dim) for n, r, p, b in zip(kept, rows, precision, blocks))
    n, r = sum(kept), sum(rows)
    return (rows_bytes(r, bitmap_features) + index_bytes(r, n, dim) + values
            + block_starts_bytes(int_scales, precision, sum(blocks)))


def span_blocks(spans: list[tuple[int, int, str]], block_starts: Sequence[int]) -> list[int]:
    """The frequency blocks in each stored segment (spans begin at block starts)."""
    starts = np.asarray(block_starts)
    return [int(((starts >= a) & (starts < b)).sum()) or 1 for a, b, _ in spans]


def _size(scores: torch.Tensor, keep: int, spans: list[tuple[int, int, str]], int_scales: str,
          blocks: list[int]) -> int:
    counts = topk_mask(scores, keep).sum(dim=1)
    kept = [int(counts[a:b].sum()) for a, b, _ in spans]
    rows = [int((counts[a:b] > 0).sum()) for a, b, _ in spans]
    return embedding_bytes(kept, rows, bitmap_span(counts), scores.shape[1], [p for _, _, p in spans], int_scales,
                           blocks)


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
                   block_starts: Sequence[int] = (0,), int_scales: str = "row") -> int:
    """The most entries whose artifact embedding at ``precision`` (one, or one per block starting at
    ``block_starts``; ``int_scales`` per row or per block and dimension) takes at most ``budget`` bytes (0 if not
    even the empty table fits)."""
    spans = segments(precision, block_starts, scores.shape[0])
    blocks = span_blocks(spans, block_starts)
    return largest_within(lambda n: _size(scores, n, spans, int_scales, blocks), budget, scores.numel())


def scheme_bytes(feature_dims: np.ndarray, dim: int, precision: Precision, block_starts: Sequence[int] = (0,),
                 projection_groups: int = 0, int_scales: str = "row") -> int:
    """Bytes of the artifact's embedding for a fixed scheme (feature i keeps its first ``feature_dims[i]`` dims) at
    ``precision`` — with ``projection_groups`` K×K fp32 projections (MDE: one per block) and the group of every
    feature when it has them: per feature (uint8 while the groups fit, else int32) or, as MDE's blocks are id
    ranges, one run per block (its first id, int32, and its group), whichever is smaller."""
    counts = np.asarray(feature_dims, dtype=np.int64)
    m = counts.size
    spans = segments(precision, block_starts, m)
    kept = [int(counts[a:b].sum()) for a, b, _ in spans]
    rows = [int((counts[a:b] > 0).sum()) for a, b, _ in spans]
    out = embedding_bytes(kept, rows, bitmap_span(counts), dim, [p for _, _, p in spans], int_scales,
                          span_blocks(spans, block_starts))
    if projection_groups:  # one run per group: MDE's groups are frequency blocks, id ranges
        out += projection_bytes(projection_groups, dim) + groups_bytes(projection_groups, m,
                                                                        group_value_bytes(projection_groups))
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


def smallest_embedding_bytes(dim: int, precisions: Sequence[str], layouts: Sequence[str] = ("row",),
                             blocks: int = 1) -> int:
    """The fewest bytes any artifact embedding with an entry kept can take at one of ``precisions`` and int scale
    ``layouts``: one entry of the first feature (a 1-byte bitmap, its row's index, its value with a quantised
    row's scale and bias — or, ``dim`` scales, every block's and dimension's)."""
    return min(embedding_bytes(1, 1, 1, dim, p, layout, blocks) for p in precisions for layout in layouts)


def check_byte_budgets(prune_config: PruneConfig, dim: int, num_features: Optional[int] = None,
                       blocks: int = 1) -> None:
    """Refuse, before any training, a byte budget that no artifact can meet: fewer bytes than one kept entry takes
    at the cheapest precision the budget's candidates may use (:func:`smallest_embedding_bytes`). ``prune.bytes``
    is checked from the config alone; ``prune.bytes_cr`` once the feature count M is known; ``blocks``: the
    search's frequency blocks (what ``dim`` scales pay for).

    Raises:
        ConfigError: naming ``prune.bytes`` or ``prune.bytes_cr``, the budget's bytes and the smallest size.
    """
    chosen = prune_config.precision
    precisions = BYTE_PRECISIONS if chosen == "auto" else tuple(chosen) if isinstance(chosen, list) else (chosen,)
    smallest = smallest_embedding_bytes(dim, precisions, candidate_layouts(prune_config), blocks)
    asked = [("prune.bytes", b, f"{b:,} bytes") for b in prune_config.byte_budgets]
    if num_features is not None:
        dense = num_features * dim * 4
        asked += [("prune.bytes_cr", int(dense / c), f"{c:g} leaves {int(dense / c):,} bytes (M·K·4 = {dense:,} ÷ it)")
                  for c in prune_config.bytes_crs]
    for key, size, what in asked:
        if size < smallest:
            raise ConfigError(key, f"{what}: no embedding fits; the smallest artifact (one entry kept, K = {dim}, "
                                   f"{'/'.join(precisions)}) takes {smallest:,} bytes")


@dataclass(frozen=True)
class Budget:
    """One pruning budget: a name (``cr10``, ``params50000``, ``bytes_cr40-int8``, ``bytes_cr40-int8-dim``), the kept
    entries and the CR it asks for, and how its artifact stores the values (one precision, or one per frequency
    block starting at ``block_starts``; int scales per row or per block and dimension). A byte budget (``bytes``:
    embedding bytes) is one candidate per precision (and int scale layout), grouped under
    ``group``; its kept entries (and a mixed candidate's precision per block) are known once the scores are
    (:meth:`resolved`)."""

    name: str
    kept: int
    cr: float
    precision: Precision = "fp32"
    bytes: Optional[int] = None
    group: str = ""
    block_starts: tuple[int, ...] = (0,)
    int_scales: str = "row"  # int8/int4 scales per kept row, or per block and dimension ("dim")

    @property
    def tag(self) -> str:
        """Path-safe name (Train run names, artifact folders)."""
        return self.name.replace(".", "_")

    def resolved(self, scores: torch.Tensor) -> "Budget":
        """A byte budget with its kept entries: as many of the best ``scores`` (M, K) as fit its bytes (a mixed
        candidate first chooses its precision per block, :func:`~autosrh_ray.artifact.budget.mixed_precision`)."""
        if self.bytes is None:
            return self
        precision = self.precision
        if precision in MIXED_CANDIDATES:
            precision = mixed_precision(scores, self.bytes, self.block_starts, MIXED_CANDIDATES[precision])
            precision = precision[0] if len(set(precision)) == 1 else precision  # one precision after all
        kept = max(1, kept_for_bytes(scores, self.bytes, precision, self.block_starts, self.int_scales))
        return replace(self, kept=kept, cr=scores.numel() / kept, precision=precision)


BYTE_PRECISIONS = ("fp32", "fp16", "int8", "int4")  # the candidates of a byte budget under precision: auto
# ... and, with more than one block, a precision per block guided by the kept dims (the rarer half's floor)
MIXED_CANDIDATES = {"mixed": "fp16", "mixed-int4": "int4"}


def candidate_layouts(prune_config: PruneConfig) -> tuple[str, ...]:
    """The int scale layouts a run's models may use: ``prune.int_scales``, or under ``auto`` both for a byte
    budget's candidates (precision auto) and ``row`` elsewhere."""
    chosen = prune_config.int_scales
    if chosen != "auto":
        return (chosen,)
    return ("row", "dim") if prune_config.precision == "auto" else ("row",)


def _candidates(precisions: tuple, layouts: tuple[str, ...]) -> list[tuple[Precision, str]]:
    """(precision, int scales) of a byte budget's candidates: every precision row-wise (or as ``layouts[0]``),
    and the uniform integer ones again in each other layout."""
    out = [(p, layouts[0] if stored_as_integers(p) else "row") for p in precisions]
    out += [(p, layout) for layout in layouts[1:] for p in precisions if isinstance(p, str) and p in LEVELS]
    return out


def stored_as_integers(precision: Precision) -> bool:
    """Whether ``precision`` stores any integer codes (one precision, one per block, or a mixed candidate)."""
    if isinstance(precision, str):
        return precision in LEVELS or precision in MIXED_CANDIDATES
    return any(p in LEVELS for p in precision)


def _name(group: str, precision: Precision, int_scales: str) -> str:
    """A byte budget candidate's name: ``bytes_cr40-int8``, ``bytes_cr40-int8-dim`` (``dim`` scales)."""
    return f"{group}-{precision_name(precision)}" + ("-dim" if int_scales == "dim" else "")


def budgets(prune_config: PruneConfig, num_features: int, dim: int,
            block_starts: Sequence[int] = (0,)) -> list[Budget]:
    """Byte budgets first (``prune.bytes_cr``: UE's dense fp32 table M·K·4 ÷ it, then ``prune.bytes``; under
    ``prune.precision: auto`` one candidate per precision, two per-block ones with more than one block, and int8 and
    int4 again in each further layout of :func:`candidate_layouts`), then
    ``prune.cr`` entries (relative to M·K of this model), then ``prune.params`` entries (absolute, capped at M·K: a
    table smaller than the budget keeps everything). ``block_starts``: the first id of each frequency block."""
    uniform = num_features * dim
    starts = tuple(int(b) for b in block_starts)
    chosen = prune_config.precision
    stored: Precision = tuple(chosen) if isinstance(chosen, list) else "fp32" if chosen == "auto" else chosen
    layouts = candidate_layouts(prune_config)
    if chosen != "auto":
        candidates: tuple = (stored,)
    else:
        candidates = BYTE_PRECISIONS + (tuple(MIXED_CANDIDATES) if len(starts) > 1 else ())
    scales = layouts[0] if stored_as_integers(stored) else "row"  # a cr/params budget's models: one layout
    out = []
    for group, size in ([(f"bytes_cr{c:g}", int(uniform * 4 / c)) for c in prune_config.bytes_crs]
                        + [(f"bytes{b}", b) for b in prune_config.byte_budgets]):
        out += [Budget(_name(group, p, layout), 0, 0.0, p, size, group, starts, layout)
                for p, layout in _candidates(candidates, layouts)]
    out += [Budget(f"cr{cr:g}", kept_count(num_features, dim, cr), cr, stored, block_starts=starts,
                   int_scales=scales) for cr in prune_config.crs]
    for params in prune_config.param_budgets:
        kept = min(params, uniform)
        out.append(Budget(f"params{params}", kept, uniform / kept, stored, block_starts=starts, int_scales=scales))
    return out


def study_budget(prune_config: PruneConfig, num_features: int, base_dim: int) -> int:
    """The one absolute budget every study trial is pruned to, whatever its K: the first ``prune.params``, else
    M·K / the first ``prune.cr`` with the workflow's own K, else the first byte budget's entries at fp32 (its bytes
    ÷ 4, the index aside)."""
    params: Optional[list[int]] = prune_config.param_budgets
    if params:
        return params[0]
    if prune_config.crs:
        return kept_count(num_features, base_dim, prune_config.crs[0])
    first = (num_features * base_dim * 4 / prune_config.bytes_crs[0] if prune_config.bytes_crs
             else prune_config.byte_budgets[0])
    return max(1, int(first // 4))

