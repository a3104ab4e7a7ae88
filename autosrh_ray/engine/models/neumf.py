"""NeuMF: a GMF branch (e_user ⊙ e_item) and an MLP branch over [e_user, e_item], fused by one linear layer.

Both branches share the one searched embedding table (the original uses two tables; AutoSrh searches one).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .mlp import mlp_block


class NeuMF(nn.Module):
    """emb (B, 2, K), first_order (B,) → predicted rating (B,)."""

    def __init__(self, num_fields: int, dim: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        if num_fields != 2:
            raise ValueError(f"neumf needs exactly 2 fields (user, item); the data has {num_fields}")
        mlp = mlp_block(2 * dim, hidden, dropout)
        self.mlp = mlp[:-1]  # keep the hidden stack; the fusion layer replaces its output layer
        last = hidden[-1] if hidden else 2 * dim
        self.fuse = nn.Linear(dim + last, 1)

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        gmf = emb[:, 0] * emb[:, 1]
        deep = self.mlp(emb.flatten(1))
        return first_order + self.fuse(torch.cat([gmf, deep], dim=1)).squeeze(-1)
