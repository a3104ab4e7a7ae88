"""The compact model artifact: folded kept embedding values + their dimension indices (the CSR layout of
:mod:`autosrh_ray.packed`; the row pointers are stored as per-feature kept counts, uint8, and rebuilt on load).

Stores ``E ⊙ α[block]`` at kept positions only (so inference needs no α), the per-feature dimension indices
(uint8, the mixed dimension scheme D), the never-pruned first-order weights and the backbone's weights.
:func:`load_model` rebuilds a model that predicts the same as the pruned in-memory model.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .embedding import FirstOrder
from .models import EmbeddingModel, build_backbone
from .packed import PackedEmbedding

FORMAT_VERSION = 2


def save_model(model: EmbeddingModel, path: str | os.PathLike, model_name: str, num_fields: int, hidden,
               dropout: float) -> int:
    """Write the compact artifact; returns its size in bytes."""
    emb = model.embedding  # packed once pruned; a uniform model keeps every entry
    payload = {
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "num_fields": num_fields, "hidden": list(hidden), "dropout": dropout},
        "embedding": {"counts": emb.kept_per_feature().cpu().to(torch.uint8), "dims": emb.kept_dims().cpu(),
                      "values": emb.folded_values().float().cpu(), "num_features": emb.num_features,
                      "dim": emb.dim},
        "first_order": {k: v.cpu() for k, v in model.first_order.state_dict().items()},
        **_projection(model.embedding),
        "backbone": {k: v.cpu() for k, v in model.backbone.state_dict().items()},
    }
    torch.save(payload, path)
    return Path(path).stat().st_size


def _projection(embedding: nn.Module) -> dict:
    """The model's projections (per block of ``block_of``, stored per feature; or per field), if it has them."""
    if embedding.projection is None:
        return {}
    groups = embedding.block_of.cpu()
    groups = groups.to(torch.uint8 if int(groups.max()) < 256 else torch.int32)  # M bytes beside the kept values
    return {"projection": {"weights": embedding.projection.detach().float().cpu(), "groups": groups,
                           "by": embedding.projection_by}}


def load_model(path: str | os.PathLike) -> EmbeddingModel:
    """Rebuild an inference model from the artifact: a :class:`~autosrh_ray.packed.PackedEmbedding` over the folded
    kept entries (no α, no dense M×K table; row pointers in int32 while they fit), the first-order weights and the
    backbone."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported artifact format {payload.get('format_version')!r}")
    e = payload["embedding"]
    counts = e.pop("counts")
    dtype = torch.int32 if e["values"].numel() < torch.iinfo(torch.int32).max else torch.int64
    indptr = torch.zeros(int(e["num_features"]) + 1, dtype=dtype)
    torch.cumsum(counts, 0, dtype=dtype, out=indptr[1:])
    del counts
    num_features, dim = int(e["num_features"]), int(e["dim"])
    with torch.device("meta"):  # no M-sized allocation to overwrite: the stored weights are taken as they are
        first_order = FirstOrder(num_features)
    first_order.load_state_dict(payload["first_order"], assign=True)
    spec = payload["model"]
    backbone = build_backbone(spec["name"], spec["num_fields"], dim, spec["hidden"], spec["dropout"])
    backbone.load_state_dict(payload["backbone"])
    projection = payload.get("projection") or {}
    groups = projection.get("groups", torch.zeros(0, dtype=torch.uint8))  # only a projection reads the groups
    lookup = PackedEmbedding(indptr, e["dims"], e["values"], dim, groups, None, projection.get("weights"),
                             projection.get("by"))
    lookup.requires_grad_(False)
    return EmbeddingModel(lookup, first_order, backbone).eval()
