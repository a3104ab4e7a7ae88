"""Tiny models and batches for engine tests."""
from __future__ import annotations

import copy

import torch

from autosrh_ray.engine.batch import Batch
from autosrh_ray.engine.embedding import FirstOrder, SoftSelectionEmbedding
from autosrh_ray.engine.model import EmbeddingModel
from autosrh_ray.engine.model_state import load_model_state
from autosrh_ray.engine.models.backbone import build_backbone, constructor_options
from autosrh_ray.engine.packed import PackedEmbedding
from autosrh_ray.engine.prune import kept_count, pruned_state


def tiny_model(name: str = "deepfm", m: int = 30, k: int = 4, blocks: int = 3, fields: int = 3,
               sparse: bool = False, soft: bool = True, seed: int = 0, dtype=torch.float64) -> EmbeddingModel:
    torch.manual_seed(seed)
    block_of = torch.arange(m) * blocks // m
    emb = SoftSelectionEmbedding(block_of, k, soft_selection=soft, sparse=sparse, init_std=0.3)
    first = FirstOrder(m, sparse=sparse)
    torch.nn.init.normal_(first.weight.weight, std=0.1)
    model = EmbeddingModel(emb, first, build_backbone(name, fields, k, constructor_options(name, [8, 8], 0.0, {}))).to(dtype)
    if soft:
        with torch.no_grad():
            model.alpha.uniform_(0.3, 1.0)  # away from the clip boundaries, and not all equal
    return model


def pruned_model(model: EmbeddingModel, cr: float) -> EmbeddingModel:
    """``model`` pruned to ``cr`` (|E ⊙ α| or |E|) in the packed layout, θ and the first-order term copied."""
    emb = model.embedding
    state = pruned_state(model, kept_count(emb.num_features, emb.dim, cr))
    alpha = None if emb.alpha is None else torch.ones_like(emb.alpha.detach())
    packed = PackedEmbedding.empty(emb.num_features, emb.dim, emb.block_of, alpha, sparse=emb.embedding.sparse)
    out = EmbeddingModel(packed, copy.deepcopy(model.first_order), copy.deepcopy(model.backbone))
    load_model_state(out.to(emb.weight.dtype), state)
    return out


def random_batch(n: int = 16, m: int = 30, fields: int = 3, seed: int = 1, task: str = "classification",
                 dtype=torch.float64) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, m, (n, fields), generator=g)
    values = torch.rand(n, fields, generator=g, dtype=dtype) + 0.5
    if task == "classification":
        labels = (torch.rand(n, generator=g) < 0.4).to(dtype)
    else:
        labels = torch.rand(n, generator=g, dtype=dtype) * 4 + 1
    return Batch(ids, values, labels)
