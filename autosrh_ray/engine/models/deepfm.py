"""DeepFM: first order + FM pairwise term + MLP over the concatenated embeddings (shared embeddings)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .fm import fm_pairwise
from .mlp import mlp_block


class DeepFM(nn.Module):
    """emb (B, F, K), first_order (B,) → logits (B,)."""

    def __init__(self, num_fields: int, dim: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.deep = mlp_block(num_fields * dim, hidden, dropout)

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return first_order + fm_pairwise(emb) + self.deep(emb.flatten(1)).squeeze(-1)
