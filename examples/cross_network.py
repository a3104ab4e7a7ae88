"""A backbone of one's own for AutoSrh: a small cross network (DCN-style) over the flattened field embeddings.

Search its embeddings with ``--set model.name=cross_network:CrossNet`` (this folder on ``PYTHONPATH``), options
with ``--set "model.options={layers: 3}"``. The contract every backbone meets: ``CrossNet(num_fields, dim,
**options)``; ``forward(embeddings (B, F, K), first_order (B,)) -> logits (B,)``.
"""
from __future__ import annotations

import torch
from torch import nn


class CrossNet(nn.Module):
    def __init__(self, num_fields: int, dim: int, layers: int = 2):
        super().__init__()
        width = num_fields * dim
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.out = nn.Linear(width, 1)

    def forward(self, embeddings: torch.Tensor, first_order: torch.Tensor) -> torch.Tensor:
        x0 = x = embeddings.flatten(1)  # (B, F·K)
        for layer in self.cross:
            x = x0 * layer(x) + x  # x_{l+1} = x0 ⊙ (W x_l + b) + x_l
        return first_order + self.out(x).squeeze(-1)  # logits (B,)
