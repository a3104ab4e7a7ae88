"""Budgets in bytes against the artifact itself: the formula equals the bytes the artifact's embedding section
holds, and the count chosen for a budget is the largest whose pruned artifact fits (brute force over every count
on a small table)."""
from __future__ import annotations

import pytest
import torch

from autosrh_ray.artifact import compact_embedding, tensor_bytes
from autosrh_ray.bytes_budget import embedding_bytes, kept_for_bytes, kept_rows
from autosrh_ray.packed import pack
from autosrh_ray.prune import topk_mask


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
        rows = int(topk_mask(s, keep).any(1).sum())
        assert kept_rows(s, keep) == rows
        assert embedding_bytes(keep, rows, *s.shape, precision) == artifact_bytes(s, keep, precision), keep


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_the_count_for_a_budget_is_the_largest_that_fits(precision):
    s = scores_with_ties(m=30, k=8, seed=1)
    sizes = [artifact_bytes(s, n, precision) for n in range(s.numel() + 1)]
    for budget in (sizes[0] - 1, sizes[0], sizes[37], sizes[37] + 1, 300, sizes[-1], sizes[-1] + 10):
        expected = max((n for n, b in enumerate(sizes) if b <= budget), default=0)
        assert kept_for_bytes(s, budget, precision) == expected, budget
