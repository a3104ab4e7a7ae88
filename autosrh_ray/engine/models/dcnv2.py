"""DCN-V2 (Wang et al., WWW 2021): a cross network over the flattened field embeddings,
x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l, with W_l full rank or low rank (U_l V_lᵀ, ``rank``), and a deep tower —
``stacked`` (cross, then the tower over its output) or ``parallel`` (both over x_0, their outputs concatenated) —
one linear layer to the logit, plus the first-order term."""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from .mlp import mlp_block


class CrossLayer(nn.Module):
    """One DCN-V2 cross layer on (B, D): x0 ⊙ (W x + b) + x, W = U Vᵀ when ``rank`` > 0."""

    def __init__(self, width: int, rank: int = 0):
        super().__init__()
        if rank:
            self.down = nn.Linear(width, rank, bias=False)  # Vᵀ
            self.up = nn.Linear(rank, width)  # U, b
        else:
            self.down, self.up = None, nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.up(self.down(x) if self.down is not None else x) + x


class DCNv2(nn.Module):
    """emb (B, F, K), first_order (B,) → logits (B,)."""

    # The defaults are sized for CPUs: Criteo's 39 fields at K 16 train at ~33k rows/s on one thread (the backbone
    # alone, batch 4096), against ~12k for BARS' full-rank 3 layers and a (400, 400) tower.
    def __init__(self, num_fields: int, dim: int, cross_layers: int = 2, rank: int = 16,
                 hidden: Sequence[int] = (200, 200), dropout: float = 0.0,
                 structure: Literal["stacked", "parallel"] = "stacked"):
        super().__init__()
        if structure not in ("stacked", "parallel"):
            raise ValueError(f"structure must be stacked or parallel (got {structure!r})")
        width = num_fields * dim
        self.structure = structure
        self.cross = nn.ModuleList(CrossLayer(width, rank) for _ in range(cross_layers))
        tower = mlp_block(width, hidden, dropout)
        self.deep = tower[:-1]  # the hidden stack; the output layer reads the cross (and deep) features
        deep_width = hidden[-1] if hidden else width
        self.out = nn.Linear(deep_width if structure == "stacked" else width + deep_width, 1)

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        x0 = x = emb.flatten(1)
        for layer in self.cross:
            x = layer(x0, x)
        features = self.deep(x) if self.structure == "stacked" else torch.cat([x, self.deep(x0)], dim=1)
        return first_order + self.out(features).squeeze(-1)
