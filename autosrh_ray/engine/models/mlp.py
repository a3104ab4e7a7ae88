"""The MLP block shared by the deep backbones, and the MLP rating backbone."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp_block(in_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear → ReLU (→ Dropout) per hidden size, then a Linear to one output."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Rating MLP (NCF's MLP): first order (biases) + MLP over the concatenated field embeddings.

    emb (B, F, K), first_order (B,) → (B,)
    """

    def __init__(self, num_fields: int, dim: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.mlp = mlp_block(num_fields * dim, hidden, dropout)

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return first_order + self.mlp(emb.flatten(1)).squeeze(-1)
