"""Mixed dimensions chosen before training, the baselines AutoSrh is compared with (pure PyTorch/NumPy).

Each scheme gives every feature its first ``d`` of the K dimensions (a 0/1 mask, as a pruned model carries one),
the same ``d`` for every feature of a frequency block (the blocks AutoSrh shares α over):

* ``grid`` — UE at each K' of ``search.grid_K`` (capped at K); one model per K', each a point at its own size.
* ``random`` — random per-block dimensions, scaled so the kept entries meet the budget (``search.random_trials``
  draws, the best by validation is kept).
* ``mde`` — Ginart et al., "Mixed Dimension Embeddings with Application to Memory-Efficient Recommendation
  Systems" (arXiv:1909.11810): a block's dimension follows its popularity, d_b = λ·p_b^T, where p_b is the
  access probability of one row of block b (its training frequency mass over its rows) and T is the
  temperature ``search.mde_temperature`` (0: uniform; the paper's best values are 0.1–0.3). Equivalently
  d_b ∝ n_b^(−T) in the paper's block-size form when rows are equally popular. λ is set so the kept entries meet
  the budget. Each block is projected to the common width K by a learned matrix (identity at the start,
  :class:`~autosrh_ray.engine.embedding.SoftSelectionEmbedding` ``projection``), counted apart as projection params.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class DimsCandidate:
    """One fixed scheme to train: a name (Train run tag), the dimension of every block and of every feature."""

    name: str
    block_dims: tuple[int, ...]
    feature_dims: np.ndarray  # (M,) int

    @property
    def kept(self) -> int:
        return int(self.feature_dims.sum())


def first_dims_mask(feature_dims: np.ndarray, dim: int) -> torch.Tensor:
    """(M, K) 0/1 float mask keeping the first ``feature_dims[i]`` dimensions of feature i."""
    d = torch.as_tensor(np.asarray(feature_dims), dtype=torch.long)
    return (torch.arange(dim).unsqueeze(0) < d.unsqueeze(1)).float()


def block_sizes(block_of: np.ndarray, num_blocks: int) -> np.ndarray:
    return np.bincount(block_of, minlength=num_blocks).astype(np.int64)


def block_popularity(frequencies: np.ndarray, block_of: np.ndarray, num_blocks: int) -> np.ndarray:
    """p_b: the probability that a training lookup hits one given row of block b (mass of b / rows of b / total)."""
    mass = np.bincount(block_of, weights=frequencies.astype(np.float64), minlength=num_blocks)
    rows = np.maximum(block_sizes(block_of, num_blocks), 1)
    return mass / rows / max(float(frequencies.sum()), 1.0)


def scaled_dims(weights: np.ndarray, sizes: np.ndarray, dim: int, budget: int) -> np.ndarray:
    """d_b = clip(round(λ·w_b), 1, K) with the largest λ whose kept entries Σ n_b·d_b stay within ``budget``
    (every block keeps at least one dimension, so a budget below Σ n_b is met by all-ones)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.max()

    def dims(lam: float) -> np.ndarray:
        return np.clip(np.round(lam * w), 1, dim).astype(np.int64)

    lo, hi = 0.0, float(dim) / max(w.min(), 1e-12) + 1.0
    for _ in range(200):  # bisection on λ: kept entries are non-decreasing in λ
        mid = (lo + hi) / 2
        if int((sizes * dims(mid)).sum()) <= budget:
            lo = mid
        else:
            hi = mid
    return dims(lo)


def mde_block_dims(frequencies: np.ndarray, block_of: np.ndarray, num_blocks: int, dim: int, budget: int,
                   temperature: float) -> np.ndarray:
    """MDE's popularity law d_b ∝ p_b^T, scaled to ``budget`` kept entries."""
    p = np.maximum(block_popularity(frequencies, block_of, num_blocks), 1e-300)
    return scaled_dims(p ** temperature, block_sizes(block_of, num_blocks), dim, budget)


def random_block_dims(block_of: np.ndarray, num_blocks: int, dim: int, budget: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Random relative dimensions per block (uniform in (0, 1]), scaled to ``budget`` kept entries."""
    weights = rng.uniform(1e-3, 1.0, size=num_blocks)
    return scaled_dims(weights, block_sizes(block_of, num_blocks), dim, budget)


def capped_dims(values: Sequence[int], dim: int) -> list[int]:
    """Candidate dimensions (grid K', AutoDim's, AutoEmb's) capped at K, distinct and sorted (K itself included
    when a value passes it)."""
    return sorted({min(d, dim) for d in values})


def candidate(name: str, block_dims: np.ndarray, block_of: np.ndarray) -> DimsCandidate:
    dims = np.asarray(block_dims, dtype=np.int64)
    return DimsCandidate(name, tuple(int(d) for d in dims), dims[block_of])


def projection_params(kept_per_feature: torch.Tensor, groups: torch.Tensor, num_groups: int, dim: int) -> int:
    """Projection matrices as counted: of each group's K×K matrix, the d_g × K rows that meet kept dimensions
    (d_g: the most dimensions a feature of the group keeps)."""
    kept = kept_per_feature.to(torch.float64)
    widest = torch.zeros(num_groups, dtype=torch.float64).scatter_reduce(0, groups.long(), kept, "amax")
    return int(widest.sum()) * dim
