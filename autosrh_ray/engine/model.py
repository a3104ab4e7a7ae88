"""The model every method trains: an embedding (any scheme: soft selection, pruning mask, packed, uniform), the
first-order term and a backbone that takes embeddings, never ids."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .embedding import FirstOrder, SoftSelectionEmbedding


class EmbeddingModel(nn.Module):
    """embedding + first-order term + backbone. ``forward(ids, values)`` → logits (B,)."""

    def __init__(self, embedding: SoftSelectionEmbedding, first_order: FirstOrder, backbone: nn.Module):
        super().__init__()
        self.embedding = embedding
        self.first_order = first_order
        self.backbone = backbone

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.embedding(ids, values), self.first_order(ids, values))

    @property
    def alpha(self):
        return self.embedding.alpha

    def theta_parameters(self) -> Iterator[nn.Parameter]:
        """Θ = {θ, E}: every trainable parameter except α."""
        alpha = self.embedding.alpha
        return (p for p in self.parameters() if p is not alpha and p.requires_grad)
