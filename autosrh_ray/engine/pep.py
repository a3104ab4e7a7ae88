"""PEP (Liu et al., "Learnable Embedding Sizes for Recommender Systems", ICLR 2021): embeddings pruned during
training by learnable soft thresholds, then retrained from their initial values (lottery-ticket style).

The embedding used while pruning (:class:`ThresholdEmbedding`) is the re-parameterisation
V̂ = sign(V) ⊙ ReLU(|V| − g(s)), g = sigmoid, with one threshold per feature and dimension (the paper's
feature-dimension granularity) starting at ``search.pep_init_threshold`` (g(s) ≈ 0: nothing pruned at first).
V, s and θ are trained together on the training loss plus ``search.pep_l2`` · Σ V̂² over the batch's rows (the
L2 term drives small entries below their thresholds); an entry with |V| ≤ g(s) is pruned (exactly zero in V̂).
The stage stops when the kept count reaches the budget (checked at every evaluation), or, if it never does, by
patience on validation. The budget's mask keeps the entries with the largest margin |V| − g(s) (exactly the
budget), and the retrain starts from the initial embedding values of those entries (in the packed layout).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .embedding import SoftSelectionEmbedding


class ThresholdEmbedding(SoftSelectionEmbedding):
    """A uniform embedding (no α) with a learnable threshold per entry; ``penalty(ids)`` is PEP's L2 term."""

    def __init__(self, block_of: torch.Tensor, dim: int, init_threshold: float, l2: float, sparse: bool = False,
                 init_std: float = 0.01):
        super().__init__(block_of, dim, soft_selection=False, sparse=sparse, init_std=init_std)
        self.threshold = nn.Parameter(torch.full((self.num_features, dim), float(init_threshold)))
        self.l2 = l2

    def thresholded(self, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """V̂ of ``rows`` (all rows by default)."""
        v = self.weight if rows is None else self.embedding(rows)
        s = self.threshold if rows is None else self.threshold[rows]
        return torch.sign(v) * torch.relu(v.abs() - torch.sigmoid(s))

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.thresholded(ids) * values.unsqueeze(-1)

    def penalty(self, ids: torch.Tensor) -> torch.Tensor:
        """λ · Σ V̂² over the distinct rows of the batch."""
        return self.l2 * self.thresholded(ids.unique()).pow(2).sum()

    @torch.no_grad()
    def margin(self) -> torch.Tensor:
        """|V| − g(s) (M, K): positive where the entry is kept."""
        return self.weight.abs() - torch.sigmoid(self.threshold)

    @torch.no_grad()
    def kept_count(self) -> int:
        return int((self.margin() > 0).sum())

    def pruning_scores(self) -> torch.Tensor:
        """What the budget's mask ranks by: the margin (kept entries first, then the nearest to their threshold)."""
        return self.margin()
