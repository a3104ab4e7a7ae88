"""The compact model artifact: folded kept embedding values + their dimension indices (CSR by feature; the row
pointers are stored as per-feature kept counts, uint8, and rebuilt on load).

Stores ``E ⊙ α[block]`` at kept positions only (so inference needs no α), the per-feature dimension indices
(uint8, the mixed dimension scheme D), the never-pruned first-order weights and the backbone's weights.
:func:`load_model` rebuilds a model that predicts the same as the pruned in-memory model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .embedding import FirstOrder, SoftSelectionEmbedding, project_by_block
from .models import EmbeddingModel, build_backbone

FORMAT_VERSION = 2


@dataclass
class CompactEmbedding:
    """CSR layout: feature i's kept dims are ``dims[indptr[i]:indptr[i+1]]`` with ``values`` at the same slots."""

    indptr: torch.Tensor  # (M+1,) int64 in memory; saved as uint8 per-feature counts
    dims: torch.Tensor  # (nnz,) uint8
    values: torch.Tensor  # (nnz,) float32
    num_features: int
    dim: int

    @staticmethod
    def from_embedding(embedding: SoftSelectionEmbedding) -> "CompactEmbedding":
        folded = embedding.selected_weight().float().cpu()
        keep = embedding.mask.bool().cpu() if embedding.mask is not None else torch.ones_like(folded, dtype=torch.bool)
        rows, cols = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by feature, then dimension
        counts = torch.bincount(rows, minlength=folded.shape[0])
        indptr = torch.zeros(folded.shape[0] + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        return CompactEmbedding(indptr, cols.to(torch.uint8), folded[rows, cols].contiguous(),
                                folded.shape[0], folded.shape[1])

    def dense(self) -> torch.Tensor:
        """The (M, K) folded embedding with zeros at pruned positions."""
        out = torch.zeros(self.num_features, self.dim, dtype=torch.float32)
        rows = torch.repeat_interleave(torch.arange(self.num_features), self.indptr[1:] - self.indptr[:-1])
        out[rows, self.dims.long()] = self.values
        return out

    def kept_dims(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]


class CompactLookup(nn.Module):
    """An embedding layer over a :class:`CompactEmbedding`: the (B, F, K) rows of ``ids`` are built from the kept
    entries alone (zeros elsewhere), times ``values`` as in the training model — no dense M×K table in memory."""

    def __init__(self, compact: CompactEmbedding, projection: Optional[torch.Tensor] = None,
                 groups: Optional[torch.Tensor] = None, projection_by: Optional[str] = None):
        super().__init__()
        # memory ≈ the artifact: uint8 dims as stored, row pointers in int32 while they fit
        narrow = compact.values.numel() < torch.iinfo(torch.int32).max
        self.register_buffer("indptr", compact.indptr.to(torch.int32 if narrow else torch.int64), persistent=False)
        self.register_buffer("dims", compact.dims, persistent=False)
        self.register_buffer("values", compact.values, persistent=False)
        self.register_buffer("projection", projection, persistent=False)  # MDE: (L, K, K) per frequency block
        self.register_buffer("groups", groups, persistent=False)  # (M,) uint8: every feature's projection block
        self.projection_by = projection_by  # "block" (MDE) or "field" (AutoDim), as in the training model
        self.dim = compact.dim

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        start = self.indptr[flat].long()
        counts = self.indptr[flat + 1].long() - start
        row = torch.repeat_interleave(torch.arange(flat.numel(), device=ids.device), counts)
        slot = torch.repeat_interleave(start - torch.cumsum(counts, 0) + counts, counts) + \
            torch.arange(int(counts.sum()), device=ids.device)
        out = torch.zeros(flat.numel(), self.dim, dtype=self.values.dtype, device=ids.device)
        out[row, self.dims[slot].long()] = self.values[slot]
        out = out.reshape(*ids.shape, self.dim)
        if self.projection_by == "block":
            out = project_by_block(out, self.groups[ids].long(), self.projection)
        elif self.projection_by == "field":
            out = torch.einsum("bfk,fkj->bfj", out, self.projection)
        return out * values.unsqueeze(-1)


def save_model(model: EmbeddingModel, path: str | os.PathLike, model_name: str, num_fields: int, hidden,
               dropout: float) -> int:
    """Write the compact artifact; returns its size in bytes."""
    compact = CompactEmbedding.from_embedding(model.embedding)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "num_fields": num_fields, "hidden": list(hidden), "dropout": dropout},
        "embedding": {"counts": compact.kept_dims().to(torch.uint8), "dims": compact.dims,
                      "values": compact.values, "num_features": compact.num_features, "dim": compact.dim},
        "first_order": {k: v.cpu() for k, v in model.first_order.state_dict().items()},
        **_projection(model.embedding),
        "backbone": {k: v.cpu() for k, v in model.backbone.state_dict().items()},
    }
    torch.save(payload, path)
    return Path(path).stat().st_size


def _projection(embedding: SoftSelectionEmbedding) -> dict:
    """The model's projections (per block of ``block_of``, stored per feature; or per field), if it has them."""
    if embedding.projection is None:
        return {}
    groups = embedding.block_of.cpu()
    groups = groups.to(torch.uint8 if int(groups.max()) < 256 else torch.int32)  # M bytes beside the kept values
    return {"projection": {"weights": embedding.projection.detach().float().cpu(), "groups": groups,
                           "by": embedding.projection_by}}


def load_model(path: str | os.PathLike) -> EmbeddingModel:
    """Rebuild an inference model from the artifact: a :class:`CompactLookup` over the kept entries (no α, no mask,
    no dense M×K table), the first-order weights and the backbone."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported artifact format {payload.get('format_version')!r}")
    e = payload["embedding"]
    counts = e.pop("counts")
    dtype = torch.int32 if e["values"].numel() < torch.iinfo(torch.int32).max else torch.int64
    indptr = torch.zeros(int(e["num_features"]) + 1, dtype=dtype)
    torch.cumsum(counts, 0, dtype=dtype, out=indptr[1:])
    del counts
    compact = CompactEmbedding(indptr, e["dims"], e["values"], int(e["num_features"]), int(e["dim"]))
    with torch.device("meta"):  # no M-sized allocation to overwrite: the stored weights are taken as they are
        first_order = FirstOrder(compact.num_features)
    first_order.load_state_dict(payload["first_order"], assign=True)
    spec = payload["model"]
    backbone = build_backbone(spec["name"], spec["num_fields"], compact.dim, spec["hidden"], spec["dropout"])
    backbone.load_state_dict(payload["backbone"])
    projection = payload.get("projection")
    lookup = (CompactLookup(compact) if projection is None else
              CompactLookup(compact, projection["weights"], projection["groups"], projection["by"]))
    return EmbeddingModel(lookup, first_order, backbone).eval()
