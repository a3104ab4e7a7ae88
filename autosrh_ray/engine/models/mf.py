"""Matrix factorisation: user/item biases (first order) + <e_user, e_item>."""
from __future__ import annotations

import torch
from torch import nn


class MF(nn.Module):
    """emb (B, 2, K) for (user, item), first_order (B,) → predicted rating (B,)."""

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        if num_fields != 2:
            raise ValueError(f"mf needs exactly 2 fields (user, item); the data has {num_fields}")

    def forward(self, emb: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        return first_order + (emb[:, 0] * emb[:, 1]).sum(dim=1)
