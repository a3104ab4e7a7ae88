"""Factorization Machine: first order + pairwise interactions summed over K (not averaged)."""
from __future__ import annotations

import torch
from torch import nn


def fm_pairwise(emb: torch.Tensor) -> torch.Tensor:
    """Σ_{f<g} <e_f, e_g> for emb (B, F, K) → (B,), via ½ Σ_k [(Σ_f e)² − Σ_f e²]."""
    summed = emb.sum(dim=1)
    return 0.5 * (summed.pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)


class FM(nn.Module):
    """emb (B, F, K), first_order (B,) → logits (B,)."""

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return first_order + fm_pairwise(emb)
