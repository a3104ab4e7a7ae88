"""AutoEmb (Zhao et al., "AutoEmb: Automated Embedding Dimensionality Search in Streaming Recommendations",
ICDM 2021): a controller weighs candidate dimensions per feature from the feature's popularity.

Search model (:class:`AutoEmbEmbedding`): every feature has one K-wide row; candidate n reads its first d_n
dimensions and is projected to K by W[n] (identity at the start; the paper's per-candidate transformation, its
batch normalisation left out). A small controller, an MLP on the feature's popularity (log of its training
frequency, standardised), outputs p_i = softmax(controller(pop_i)) over the candidates, and the feature's
embedding is Σ_n p_{i,n} · W[n]ᵀ e_i[:d_n]. The controller's weights are the architecture parameters: fitted on
validation batches in the bi-level step (one flat vector, so the step, its all-reduce and checkpoints treat it
like AutoSrh's α, with plain gradients), Θ on train.

Selection: each feature keeps d_i = d_{argmax p_i} (features of equal popularity get equal dimensions); the
retrain model keeps every feature's first d_i dimensions with one projection per chosen candidate, trained from the
initial embedding. AutoEmb has no budget: the kept size is what the controller chose (``cr_achieved``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .embedding import CandidatePrefixes
from .mixed_dims import capped_dims

PAPER_CANDIDATES = (2, 16, 128)
HIDDEN = 16


def candidate_dims(dim: int, candidates: Sequence[int] = PAPER_CANDIDATES) -> list[int]:
    """The paper's candidate dimensions (or ``candidates``) capped at K."""
    return capped_dims(candidates, dim)


def popularity_input(frequencies: np.ndarray) -> torch.Tensor:
    """The controller's input per feature: log(1 + training frequency), standardised over the features."""
    x = np.log1p(np.asarray(frequencies, dtype=np.float64))
    return torch.from_numpy(((x - x.mean()) / (x.std() + 1e-12)).astype(np.float32))


def controller_size(num_candidates: int, hidden: int = HIDDEN) -> int:
    """Weights of the controller 1 → hidden → candidates (with biases), as one flat vector."""
    return hidden + hidden + hidden * num_candidates + num_candidates


def controller_logits(flat: torch.Tensor, popularity: torch.Tensor, num_candidates: int,
                      hidden: int = HIDDEN) -> torch.Tensor:
    """The controller on popularity values (any shape) → logits (..., N); ``flat`` holds its weights."""
    w1, b1, w2, b2 = torch.split(flat, [hidden, hidden, hidden * num_candidates, num_candidates])
    h = torch.relu(popularity.unsqueeze(-1) * w1 + b1)
    return h @ w2.view(hidden, num_candidates) + b2


class AutoEmbEmbedding(CandidatePrefixes):
    """E (M×K), the controller's flat weights ``alpha``, per-candidate projections W (N, K, K) and every
    feature's popularity input (a buffer, so workers get it with the initial state)."""

    def __init__(self, num_features: int, dim: int, candidates: Sequence[int], sparse: bool = False,
                 init_std: float = 0.01):
        super().__init__(num_features, dim, candidates, sparse, init_std)
        n = len(candidates)
        self.register_buffer("popularity", torch.zeros(num_features), persistent=True)
        self.alpha = nn.Parameter(torch.randn(controller_size(n)) * 0.1)
        self.projection = nn.Parameter(torch.eye(dim).repeat(n, 1, 1))

    def choice_weights(self, ids: torch.Tensor) -> torch.Tensor:
        """p (..., N) for the features ``ids``."""
        logits = controller_logits(self.alpha, self.popularity[ids].to(self.alpha.dtype), len(self.candidates))
        return torch.softmax(logits, dim=-1)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        projected = torch.einsum("bfnk,nkj->bfnj", self.candidate_rows(ids), self.projection)
        out = torch.einsum("bfnj,bfn->bfj", projected, self.choice_weights(ids).to(projected.dtype))
        return out * values.unsqueeze(-1)


def selected_candidates(alpha: torch.Tensor, popularity: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """Every feature's chosen candidate index (M,): the argmax of the controller's weights."""
    with torch.no_grad():
        return torch.argmax(controller_logits(alpha.float(), popularity.float(), num_candidates), dim=-1)
