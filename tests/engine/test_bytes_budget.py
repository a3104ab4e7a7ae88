"""Budgets in bytes against the artifact itself: the formula equals the bytes the artifact's embedding section
holds, and the count chosen for a budget is the largest whose pruned artifact fits (brute force over every count
on a small table)."""
from __future__ import annotations

import pytest
import torch

from autosrh_ray.artifact.budget import bitmap_span, embedding_bytes, kept_for_bytes
from autosrh_ray.artifact.format import compact_embedding, tensor_bytes
from autosrh_ray.engine.packed import pack
from autosrh_ray.engine.prune import topk_mask


def scores_with_ties(m: int = 60, k: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(m, k, generator=g) * torch.rand(m, 1, generator=g) ** 3  # rows of very different sizes
    s[::7, 4:] = 0.0  # ties at zero (an α clipped to 0)
    return s


def artifact_bytes(scores: torch.Tensor, keep: int, precision: str) -> int:
    mask = topk_mask(scores, keep)
    indptr, dims, values = pack(scores, mask)
    return tensor_bytes(compact_embedding(mask.sum(1), dims, values, scores.shape[1], precision))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int4"])
def test_the_formula_is_the_artifacts_bytes(precision):
    s = scores_with_ties()
    for keep in (0, 1, 5, 60, 200, 500, 900, s.numel()):
        counts = topk_mask(s, keep).sum(1)
        rows = int((counts > 0).sum())
        assert embedding_bytes(keep, rows, bitmap_span(counts), s.shape[1], precision) == \
            artifact_bytes(s, keep, precision), keep


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_the_count_for_a_budget_is_the_largest_that_fits(precision):
    s = scores_with_ties(m=30, k=8, seed=1)
    sizes = [artifact_bytes(s, n, precision) for n in range(s.numel() + 1)]
    for budget in (sizes[0] - 1, sizes[0], sizes[37], sizes[37] + 1, 300, sizes[-1], sizes[-1] + 10):
        expected = max((n for n, b in enumerate(sizes) if b <= budget), default=0)
        assert kept_for_bytes(s, budget, precision) == expected, budget


PLAN, STARTS = ("fp16", "int8", "int8", "int4"), (0, 10, 25, 40)


def plan_bytes(scores: torch.Tensor, keep: int) -> int:
    mask = topk_mask(scores, keep)
    indptr, dims, values = pack(scores, mask)
    return tensor_bytes(compact_embedding(mask.sum(1), dims, values, scores.shape[1], PLAN, STARTS))


def test_with_a_precision_per_block_the_formula_and_the_count_match_the_artifact():
    s = scores_with_ties(m=60, k=8, seed=2)
    sizes = [plan_bytes(s, n) for n in range(s.numel() + 1)]
    for keep in (0, 1, 7, 100, 300, s.numel()):
        counts = topk_mask(s, keep).sum(1)
        spans = ((0, 10, "fp16"), (10, 40, "int8"), (40, 60, "int4"))  # the two int8 blocks: one segment
        formula = embedding_bytes([int(counts[a:b].sum()) for a, b, _ in spans],
                                  [int((counts[a:b] > 0).sum()) for a, b, _ in spans], bitmap_span(counts), 8,
                                  [p for *_, p in spans])
        assert formula == sizes[keep], keep
    for budget in (sizes[0] - 1, sizes[0], sizes[50], sizes[50] + 1, sizes[-1]):
        expected = max((n for n, b in enumerate(sizes) if b <= budget), default=0)
        assert kept_for_bytes(s, budget, PLAN, STARTS) == expected, budget


def test_the_mixed_precision_follows_the_dims_each_block_keeps():
    """Block 0's rows keep 12 dims (int8: 16 B a row, fp16: 24), block 1's keep 3 (fp16: 6 B, int8: 7, int4: 5.5):
    the guided plan stores block 0 at int8 and block 1 at fp16, or at int4 when the rarer half may drop to it."""
    from autosrh_ray.artifact.budget import mixed_precision

    s = torch.zeros(40, 16)
    s[:20, :12] = 1.0
    s[20:, :3] = 0.5
    budget = embedding_bytes(20 * 12 + 20 * 3, 40, 40, 16, "fp16")  # exactly every non-zero entry at fp16
    assert kept_for_bytes(s, budget, "fp16") == 300
    assert mixed_precision(s, budget, (0, 20), "fp16") == ("int8", "fp16")
    assert mixed_precision(s, budget, (0, 20), "int4") == ("int8", "int4")
    s[20:, 2] = 0.0  # 2 dims a row: int4 (5 B) no longer beats fp16 (4 B)
    assert mixed_precision(s, budget, (0, 20), "int4") == ("int8", "fp16")


@pytest.mark.parametrize("precision", ["int8", "int4", PLAN])
def test_with_dim_scales_the_formula_and_the_count_match_the_artifact(precision):
    """Scales per block and dimension: each segment pays 4·K bytes per block it spans (whatever its rows), the
    table the blocks' first ids once; the count for a budget is the largest whose artifact fits (brute force)."""
    s = scores_with_ties(m=60, k=8, seed=3)

    def artifact(keep: int) -> int:
        mask = topk_mask(s, keep)
        _, dims, values = pack(s, mask)
        return tensor_bytes(compact_embedding(mask.sum(1), dims, values, 8, precision, STARTS, "dim"))

    sizes = [artifact(n) for n in range(s.numel() + 1)]
    spans = (((0, 10, "fp16"), (10, 40, "int8"), (40, 60, "int4")) if isinstance(precision, tuple)
             else ((0, 60, precision),))
    blocks = [sum(a <= x < b for x in STARTS) for a, b, _ in spans]
    for keep in (0, 1, 7, 100, 300, s.numel()):
        counts = topk_mask(s, keep).sum(1)
        formula = embedding_bytes([int(counts[a:b].sum()) for a, b, _ in spans],
                                  [int((counts[a:b] > 0).sum()) for a, b, _ in spans], bitmap_span(counts), 8,
                                  [p for *_, p in spans], "dim", blocks)
        assert formula == sizes[keep], keep
    for budget in (sizes[0] - 1, sizes[0], sizes[50], sizes[50] + 1, sizes[-1]):
        expected = max((n for n, b in enumerate(sizes) if b <= budget), default=0)
        assert kept_for_bytes(s, budget, precision, STARTS, "dim") == expected, budget
