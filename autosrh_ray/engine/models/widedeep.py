"""Wide & Deep: the wide part is the first-order term; the deep part an MLP over the concatenated embeddings."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .mlp import mlp_block


class WideDeep(nn.Module):
    """emb (B, F, K), first_order (B,) → logits (B,)."""

    def __init__(self, num_fields: int, dim: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.deep = mlp_block(num_fields * dim, hidden, dropout)

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return first_order + self.deep(emb.flatten(1)).squeeze(-1)
