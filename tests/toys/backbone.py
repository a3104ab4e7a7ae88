"""A user's backbone: a low-rank bilinear interaction of every pair of fields, Σ_{f<g} <U e_f, U e_g>, plus the
first-order term. It meets the contract: ``Bilinear(num_fields, dim, **options)``, ``forward((B, F, K), (B,)) ->
(B,)``."""
from __future__ import annotations

import torch
from torch import nn


class Bilinear(nn.Module):
    def __init__(self, num_fields: int, dim: int, rank: int = 4):
        super().__init__()
        self.project = nn.Linear(dim, rank, bias=False)

    def forward(self, embeddings: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        z = self.project(embeddings)  # (B, F, r)
        pairs = 0.5 * (z.sum(dim=1).pow(2) - z.pow(2).sum(dim=1)).sum(dim=1)
        return first_order + pairs


class WrongShape(Bilinear):
    """Returns (B, 1) logits: the probe must refuse it."""

    def forward(self, embeddings: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return super().forward(embeddings, first_order).unsqueeze(1)


class NoDim(nn.Module):
    """A constructor without the contract's ``dim``: building it must fail with one line."""

    def __init__(self, num_fields: int):
        super().__init__()
