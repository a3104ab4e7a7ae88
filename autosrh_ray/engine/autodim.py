"""AutoDim (Zhao et al., "AutoDim: Field-aware Embedding Dimension Search in Recommender Systems", WWW 2021):
one embedding dimension per field, chosen from a candidate set by a bi-level search.

Search model (:class:`AutoDimEmbedding`), with the paper's weight-sharing candidates: every feature has one
K-wide row; candidate n of field f reads its first d_n dimensions and projects them to the common width K with
its own matrix W[f, n] (identity at the start); the field's output is the mix Σ_n p_{f,n} · W[f, n]ᵀ e[:d_n] with
p_f = softmax((α_f + Gumbel noise) / τ) while training (plain softmax(α_f) when evaluating). α (F × N) is fitted
on the validation split, Θ on train, in the same first/second-order bi-level step as AutoSrh's α (without the
[0, 1] clip and row normalisation, which belong to AutoSrh's soft selection).

Selection: field f gets d_f = d_{argmax α_f}; the retrain model keeps every feature's first d_f dimensions (a
mask) and projects each field to K with a fresh matrix, trained from the initial embedding (the paper retrains
the selected architecture from scratch). AutoDim has no budget: the kept size is what the search chose
(``cr_achieved``). Left out: the paper's batch normalisation after each projection and its temperature
annealing (τ is fixed, ``search.autodim_temperature``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .embedding import CandidatePrefixes
from .mixed_dims import capped_dims

PAPER_CANDIDATES = (8, 16, 32, 48, 64)


def candidate_dims(dim: int, candidates: Sequence[int] = PAPER_CANDIDATES) -> list[int]:
    """The paper's candidate dimensions (or ``candidates``) capped at K."""
    return capped_dims(candidates, dim)


class AutoDimEmbedding(CandidatePrefixes):
    """The search-time embedding: E (M×K), α (F×N) logits, W (F, N, K, K); ``forward(ids, values)`` → (B, F, K)
    with column f of ``ids`` in field f."""

    def __init__(self, num_features: int, num_fields: int, dim: int, candidates: Sequence[int],
                 temperature: float = 1.0, sparse: bool = False, init_std: float = 0.01):
        super().__init__(num_features, dim, candidates, sparse, init_std)
        n = len(candidates)
        self.alpha = nn.Parameter(torch.zeros(num_fields, n))
        self.projection = nn.Parameter(torch.eye(dim).repeat(num_fields, n, 1, 1))
        self.temperature = temperature

    def mixing_weights(self) -> torch.Tensor:
        """p (F, N): Gumbel-softmax of α while training, softmax of α when evaluating."""
        if self.training:
            return nn.functional.gumbel_softmax(self.alpha, tau=self.temperature, hard=False, dim=-1)
        return torch.softmax(self.alpha, dim=-1)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        projected = torch.einsum("bfnk,fnkj->bfnj", self.candidate_rows(ids), self.projection)
        out = torch.einsum("bfnj,fn->bfj", projected, self.mixing_weights().to(projected.dtype))
        return out * values.unsqueeze(-1)


def selected_field_dims(alpha: torch.Tensor, candidates: Sequence[int]) -> list[int]:
    """d_f = the candidate with the largest α_f, per field."""
    return [int(candidates[int(i)]) for i in torch.argmax(alpha.detach(), dim=1)]


def feature_dims(field_dims: Sequence[int], field_of: np.ndarray) -> np.ndarray:
    """Every feature's kept dimension count: its field's."""
    return np.asarray(field_dims, dtype=np.int64)[field_of]
