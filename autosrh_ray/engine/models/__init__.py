"""Backbones take embeddings, never ids: (B, F, K) embedding output + (B,) first-order term → (B,) logits.

Any backbone works with any embedding scheme (soft selection, pruning mask, uniform).
"""
from __future__ import annotations

from typing import Iterator

import math

import torch
from torch import nn

from ...config import Config, ConfigError, sparse_embedding
from .. import autodim, autoemb
from ..autodim import AutoDimEmbedding
from ..autoemb import AutoEmbEmbedding
from ..pep import ThresholdEmbedding
from ..embedding import FirstOrder, SoftSelectionEmbedding
from ..features import FeatureSpace, block_index
from ..packed import PackedEmbedding
from .deepfm import DeepFM
from .fm import FM
from .mf import MF
from .mlp import MLP
from .neumf import NeuMF
from .widedeep import WideDeep

__all__ = ["EmbeddingModel", "build_model", "build_backbone", "FM", "WideDeep", "DeepFM", "MF", "MLP", "NeuMF"]


# Methods whose embedding is split into frequency blocks (search.L): AutoSrh's α, per-block baseline dimensions.
BLOCKED_METHODS = ("autosrh", "random", "mde")


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


def build_backbone(name: str, num_fields: int, dim: int, hidden, dropout: float) -> nn.Module:
    """The backbone module for ``model.name``."""
    if name in ("mf", "neumf") and num_fields != 2:
        raise ConfigError("model.name", f"{name} needs exactly 2 fields (user, item); the data has {num_fields}")
    if name == "fm":
        return FM()
    if name == "widedeep":
        return WideDeep(num_fields, dim, hidden, dropout)
    if name == "deepfm":
        return DeepFM(num_fields, dim, hidden, dropout)
    if name == "mf":
        return MF()
    if name == "mlp":
        return MLP(num_fields, dim, hidden, dropout)
    if name == "neumf":
        return NeuMF(dim, hidden, dropout)
    raise ConfigError("model.name", f"unknown model {name!r}")


def build_model(config: Config, features: FeatureSpace, label_mean: float = 0.0,
                retrain: bool = False, packed: bool = False) -> EmbeddingModel:
    """Model for ``config`` on ``features`` (on the CPU; callers move it). Only ``autosrh`` has α; ``mde`` has
    per-block projections; ``autodim`` searches with :class:`~autosrh_ray.engine.autodim.AutoDimEmbedding` and, with
    ``retrain``, retrains a masked embedding with per-field projections; ``autoemb`` likewise with its controller
    and per-candidate projections; ``pep`` prunes with a threshold per entry and retrains a masked embedding.
    ``packed``: the retrain embedding in the compressed layout (:class:`~autosrh_ray.engine.packed.PackedEmbedding`), empty
    until a pruned state is loaded into it; α (AutoSrh) and the projections as the dense retrain model has them.

    The global bias starts at the training label mean (regression) or its logit (classification).
    """
    m = features.num_features
    method = config.search.method
    soft = method == "autosrh"
    blocked = method in BLOCKED_METHODS
    blocks = config.search.L if blocked else 1
    block_of = torch.from_numpy(block_index(m, blocks, config.search.block_boundaries if blocked else None))
    sparse = sparse_embedding(config, m)
    embedding: nn.Module
    s = config.search
    if method == "autodim" and not retrain:
        embedding = AutoDimEmbedding(m, features.num_fields, s.K, autodim.candidate_dims(s.K, s.autodim_candidates),
                                     s.autodim_temperature, sparse, config.train.init_std)
    elif method == "pep" and not retrain:
        embedding = ThresholdEmbedding(block_of, s.K, s.pep_init_threshold, s.pep_l2, sparse, config.train.init_std)
    elif method == "autoemb" and not retrain:
        embedding = AutoEmbEmbedding(m, s.K, autoemb.candidate_dims(s.K, s.autoemb_candidates), sparse,
                                     config.train.init_std)
        frequencies = getattr(features, "frequencies", None)  # workers get it with the initial state instead
        if frequencies is not None:
            embedding.popularity.copy_(autoemb.popularity_input(frequencies))
    else:
        projection = {"mde": "block", "autoemb": "block", "autodim": "field"}.get(method)
        groups = len(autoemb.candidate_dims(s.K, s.autoemb_candidates)) if method == "autoemb" else 0
        if packed:
            num_groups = (groups or blocks) if projection == "block" else features.num_fields
            embedding = PackedEmbedding.empty(
                m, s.K, block_of, torch.ones(blocks, s.K) if soft else None,
                torch.eye(s.K).repeat(num_groups, 1, 1) if projection else None, projection, sparse)
        else:
            embedding = SoftSelectionEmbedding(block_of, s.K, soft_selection=soft, sparse=sparse,
                                               init_std=config.train.init_std, projection=projection,
                                               num_fields=features.num_fields, projection_groups=groups)
    if config.task == "classification":
        p = min(max(label_mean, 1e-4), 1 - 1e-4)
        bias = math.log(p / (1 - p))
    else:
        bias = label_mean
    first_order = FirstOrder(m, sparse=sparse, bias=bias)
    backbone = build_backbone(config.model.name, features.num_fields, config.search.K, config.model.hidden,
                              config.model.dropout)
    return EmbeddingModel(embedding, first_order, backbone)
