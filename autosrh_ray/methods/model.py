"""The model a method trains for a config: its embedding (the method's search embedding in the first stage, the
masked or packed retrain embedding after pruning), the first-order term and the backbone ``model.name`` names."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..config import Config, sparse_embedding
from ..engine.embedding import FirstOrder, SoftSelectionEmbedding
from ..engine.features import FeatureSpace, block_index
from ..engine.model import EmbeddingModel
from ..engine.model_state import load_model_state
from ..engine.models.backbone import build_backbone, constructor_options, probe_backbone
from ..engine.packed import PackedEmbedding, is_packed
from .registry import method_of


def backbone_for(config: Config, num_fields: int) -> nn.Module:
    """The backbone of ``model.name`` with its options, for ``num_fields`` fields of dimension ``search.K``."""
    m = config.model
    return build_backbone(m.name, num_fields, config.search.K,
                          constructor_options(m.name, m.hidden, m.dropout, m.options))


def check_backbone(config: Config, num_fields: int) -> None:
    """Before any training, as soon as the fields are known: ``model.name`` imports, builds with its options and
    answers a 2-row probe batch with finite logits of shape (2,); else one :class:`~autosrh_ray.errors.ConfigError`
    line naming ``model.name``."""
    probe_backbone(backbone_for(config, num_fields), config.model.name, num_fields, config.search.K)


def build_model(config: Config, features: FeatureSpace, label_mean: float = 0.0,
                retrain: bool = False, packed: bool = False) -> EmbeddingModel:
    """The model for ``config`` on ``features`` (on the CPU; callers move it).

    Args:
        config: the run's config (``search.method`` picks the embedding, ``model.name`` the backbone).
        features: the feature space (counts, fields).
        label_mean: the training label mean: the global bias starts at it (regression) or its logit.
        retrain: the retrain model (a masked embedding with the method's projections) instead of the first
            stage's (the method's search embedding: α for AutoSrh, thresholds for PEP, …).
        packed: the retrain embedding in the compressed layout (:class:`~autosrh_ray.engine.packed.PackedEmbedding`),
            empty until a pruned state is loaded into it.

    Returns:
        The model.
    """
    method, s = method_of(config.search.method), config.search
    m = features.num_features
    sparse = sparse_embedding(config, m)
    blocks = s.L if method.blocked else 1
    block_of = torch.from_numpy(block_index(m, blocks, s.block_boundaries if method.blocked else None))
    embedding: nn.Module
    if method.search_embedding is not None and not retrain:
        embedding = method.search_embedding(config, features, sparse)
    else:
        projection = method.retrain_projection
        groups = method.projection_groups(s) if method.projection_groups else 0
        if packed:
            num_groups = (groups or blocks) if projection == "block" else features.num_fields
            embedding = PackedEmbedding.empty(
                m, s.K, block_of, torch.ones(blocks, s.K) if method.soft_selection else None,
                torch.eye(s.K).repeat(num_groups, 1, 1) if projection else None, projection, sparse)
        else:
            embedding = SoftSelectionEmbedding(block_of, s.K, soft_selection=method.soft_selection, sparse=sparse,
                                               init_std=config.train.init_std, projection=projection,
                                               num_fields=features.num_fields, projection_groups=groups)
    if config.task == "classification":
        p = min(max(label_mean, 1e-4), 1 - 1e-4)
        bias = math.log(p / (1 - p))
    else:
        bias = label_mean
    return EmbeddingModel(embedding, FirstOrder(m, sparse=sparse, bias=bias), backbone_for(config, features.num_fields))


def model_from_state(config: Config, features: FeatureSpace, label_mean: float, state: dict, retrain: bool = True,
                     share: bool = False, dtype: Optional[torch.dtype] = None) -> EmbeddingModel:
    """The model ``state`` belongs to (packed once pruned), with the state loaded (into ``dtype``, if given: a
    float64 checkpoint stays exact). ``share``: the model takes the state's tensors as they are (no copy; for
    read-only use such as pruning; built on the CPU, not the meta device, whose first use costs a second)."""
    model = build_model(config, features, label_mean, retrain=retrain, packed=is_packed(state))
    load_model_state(model.to(dtype=dtype) if dtype is not None else model, state, assign=share)
    return model
