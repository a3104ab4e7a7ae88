"""The compact model artifact: the kept embedding entries as a deployed table stores them, and what it costs in bytes.

Per feature only what it keeps (the CSR layout of :mod:`autosrh_ray.engine.packed`), ``E ⊙ α[block]`` folded (inference
needs no α), with

* which features keep anything, whichever is smaller: a bitmap over the feature ids up to the last that keeps
  anything (a feature that keeps nothing costs one bit, not a row pointer, and the ids past the last kept one —
  the rarest, as ids are frequency-ordered — nothing at all), or the kept ids themselves (int32, ascending; cheaper
  once fewer than one feature in 32 keeps anything); the kept rows are the kept ids in order (their rank);
* which dimensions each kept row keeps — whichever index is smaller for the table: ``dims`` (a uint8 count per
  kept row and a uint8 dimension per entry) or ``mask`` (a K-bit mask per kept row; at K = 64 cheaper once rows
  keep more than 7 dimensions on average);
* the values at ``precision`` (:mod:`autosrh_ray.engine.quantize`: fp32, fp16, or int8/int4 codes with an fp16 scale
  and bias per kept row — or, ``int_scales="dim"``, per frequency block and dimension, with the blocks' first
  feature ids) — one precision, or one per frequency block (:mod:`autosrh_ray.engine.precision_plan`): a segment per
  run of blocks at one precision, from its first feature id;

then the never-pruned first-order weights, the projections (if any) and the backbone's weights.
:func:`save_model` returns the bytes of each part, counted from the tensors it writes; :func:`load_model` rebuilds a
model that predicts as the stored values read back.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..engine.embedding import FirstOrder
from ..engine.model import EmbeddingModel
from ..engine.models.backbone import build_backbone, constructor_options
from ..engine.packed import PackedEmbedding
from ..engine.precision_plan import Precision, reported, segments
from ..engine.quantize import INT_SCALES, LEVELS, QuantizedValues, column_groups, quantize
from ..engine.stored_values import StoredValues
from .layout import bitmap_span, group_value_bytes, groups_by_runs, index_by_mask, mask_bytes, rows_by_ids

FORMAT_VERSION = 6
# 4: a bitmap over all M features (5: stops after the last kept one, or the kept ids); 6: int scales per row or
# per (block, dimension) — a 4 or 5 artifact is row-wise
READS_VERSIONS = (4, 5, 6)
MASK_ROWS = 1 << 18  # kept rows per chunk when a mask index is built or read (bounds the (rows, K) transients)


@dataclass(frozen=True)
class ArtifactBytes:
    """What an artifact holds, in bytes: ``embedding`` (values, scales and biases, the kept-row bitmap and the
    index, and the projections of the methods that have them — AutoDim, AutoEmb, MDE), ``other`` (first-order
    weights, backbone), ``file`` (on disk, with torch's framing)."""

    embedding: int
    other: int
    file: int


def tensor_bytes(tree) -> int:
    """Bytes of every tensor in a (nested) dict or list."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(v) for v in tree)
    return 0


def compact_embedding(counts: torch.Tensor, dims: torch.Tensor, values: torch.Tensor, dim: int,
                      precision: Precision = "fp32", block_starts: Sequence[int] = (0,),
                      int_scales: str = "row") -> dict:
    """The artifact's embedding section for kept entries given per feature: ``counts`` (M,) kept dims of every
    feature, ``dims`` (nnz,) uint8 and ``values`` (nnz,) feature by feature, ascending dimension; the values at
    ``precision`` (one, or one per frequency block starting at ``block_starts``), one stored segment per run of
    equal precisions; int8/int4 scales per kept row or (``int_scales="dim"``) per block and dimension."""
    if int_scales not in INT_SCALES:
        raise ValueError(f"int_scales must be one of {', '.join(INT_SCALES)} (got {int_scales!r})")
    counts = counts.long()
    rows = counts > 0
    kept_counts = counts[rows]
    indptr = torch.zeros(int(kept_counts.numel()) + 1, dtype=torch.int64)
    torch.cumsum(kept_counts, 0, out=indptr[1:])
    n_rows, nnz = int(kept_counts.numel()), int(dims.numel())
    span = bitmap_span(counts)  # ids past the last kept one: not stored
    if rows_by_ids(n_rows, span):
        which = {"row_ids": torch.nonzero(rows).flatten().to(torch.int32)}
    else:
        which = {"rows": torch.from_numpy(np.packbits(rows[:span].numpy(), bitorder="little"))}
    spans = segments(precision, block_starts, int(counts.numel()))
    by_dim = int_scales == "dim" and any(p in LEVELS for *_, p in spans)
    starts = torch.tensor(list(block_starts), dtype=torch.int32)
    groups = _column_groups(rows, kept_counts, dims, starts, dim) if by_dim else None
    section = {"num_features": int(counts.numel()), "dim": int(dim), **which,
               "precision": reported(precision),
               "segments": _segments(values, indptr, _row_ranks(rows), spans, groups, starts, dim)}
    if by_dim:
        section["block_starts"] = starts
    if index_by_mask(n_rows, nnz, dim):
        section.update(index="mask", masks=_masks(indptr, dims, dim))
    else:
        section.update(index="dims", counts=kept_counts.to(torch.uint8), dims=dims.to(torch.uint8))
    return section


def _row_ranks(rows: torch.Tensor) -> torch.Tensor:
    """(M+1,) kept rows before each feature id (the bitmap's rank)."""
    ranks = torch.zeros(rows.numel() + 1, dtype=torch.int64)
    torch.cumsum(rows.long(), 0, out=ranks[1:])
    return ranks


def _column_groups(rows: torch.Tensor, kept_counts: torch.Tensor, dims: torch.Tensor, starts: torch.Tensor,
                   dim: int) -> torch.Tensor:
    """(nnz,) the ``dim`` scale group of every kept entry over the whole table: block · K + dimension."""
    row_blocks = torch.searchsorted(starts.long(), torch.nonzero(rows).flatten(), right=True) - 1
    return column_groups(dims, torch.repeat_interleave(row_blocks, kept_counts, output_size=int(dims.numel())), dim)


def _segments(values: torch.Tensor, indptr: torch.Tensor, ranks: torch.Tensor, spans: list[tuple[int, int, str]],
              groups: Optional[torch.Tensor] = None, starts: Optional[torch.Tensor] = None,
              dim: int = 0) -> list[dict]:
    """Each span of feature ids (first, end, precision) quantised on its own: its kept rows' values; integer
    codes with scales per row, or per block and dimension where ``groups`` (every entry's, over the table) are
    given — a segment's groups are its own blocks' (spans begin and end at block starts)."""
    out = []
    for first, end, p in spans:
        r0, r1 = int(ranks[first]), int(ranks[end])
        local = indptr[r0:r1 + 1] - indptr[r0]
        by_dim = groups is not None and p in LEVELS
        own = None
        if by_dim:
            b0, b1 = (int(torch.searchsorted(starts.long(), torch.tensor(x), right=True)) - 1 for x in (first, end - 1))
            own = (groups[int(indptr[r0]):int(indptr[r1])] - b0 * dim, (b1 - b0 + 1) * dim)
        stored = quantize(values[int(indptr[r0]):int(indptr[r1])], local, p, own)
        segment = {"first": first, "precision": p, "values": stored.data}
        if stored.scale is not None:
            segment.update(scale=stored.scale, bias=stored.bias)
        if by_dim:
            segment["scales"] = "dim"
        out.append(segment)
    return out


def _masks(indptr: torch.Tensor, dims: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, ceil(K/8)) uint8: bit d of a row's mask (little-endian bytes) set where the row keeps dimension d."""
    n_rows = indptr.numel() - 1
    out = np.zeros((n_rows, mask_bytes(dim)), dtype=np.uint8)
    for lo in range(0, n_rows, MASK_ROWS):
        hi = min(lo + MASK_ROWS, n_rows)
        a, b = int(indptr[lo]), int(indptr[hi])
        local = torch.repeat_interleave(torch.arange(hi - lo), (indptr[lo + 1:hi + 1] - indptr[lo:hi]),
                                        output_size=b - a)
        dense = np.zeros((hi - lo, dim), dtype=bool)
        dense[local.numpy(), dims[a:b].long().numpy()] = True
        out[lo:hi] = np.packbits(dense, axis=1, bitorder="little")
    return torch.from_numpy(out)


def _kept_layout(section: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(counts per feature (M,), kept-row row pointers, dims per entry uint8) from the embedding section."""
    m, dim = int(section["num_features"]), int(section["dim"])
    rows = torch.zeros(m, dtype=torch.bool)
    if "row_ids" in section:
        rows[section["row_ids"].long()] = True
    else:  # the bitmap stops after the last kept feature: the rest keep nothing
        bits = np.unpackbits(section["rows"].numpy(), bitorder="little")[:m]
        rows[:bits.size] = torch.from_numpy(bits.astype(bool))
    if section["index"] == "dims":
        kept_counts, dims = section["counts"].long(), section["dims"]
    else:
        masks = section["masks"].numpy()
        counts_parts, dims_parts = [], []
        for lo in range(0, masks.shape[0], MASK_ROWS):
            dense = np.unpackbits(masks[lo:lo + MASK_ROWS], axis=1, count=dim, bitorder="little")
            counts_parts.append(dense.sum(axis=1))
            dims_parts.append(np.nonzero(dense)[1].astype(np.uint8))  # row-major: by row, ascending dimension
        kept_counts = torch.from_numpy(np.concatenate(counts_parts or [np.zeros(0, np.int64)])).long()
        dims = torch.from_numpy(np.concatenate(dims_parts or [np.zeros(0, np.uint8)]))
    counts = torch.zeros(m, dtype=torch.long)
    counts[rows] = kept_counts
    indptr = torch.zeros(int(kept_counts.numel()) + 1, dtype=torch.int64)
    torch.cumsum(kept_counts, 0, out=indptr[1:])
    return counts, indptr, dims


def stored_values(section: dict, counts: torch.Tensor, indptr: torch.Tensor) -> StoredValues:
    """The kept values as the section stores them (codes stay codes); ``counts`` (M,) and ``indptr`` (kept rows
    + 1) from :func:`_kept_layout`."""
    ranks = _row_ranks(counts > 0)
    m = int(section["num_features"])
    block_starts = section.get("block_starts", torch.zeros(0, dtype=torch.int32)).long()
    parts, entry_starts, row_starts, block_entries = [], [], [], []
    firsts = [int(s["first"]) for s in section["segments"]]
    for segment, first, end in zip(section["segments"], firsts, [*firsts[1:], m]):
        r0, r1 = int(ranks[first]), int(ranks[end])
        local = indptr[r0:r1 + 1] - indptr[r0]
        parts.append(QuantizedValues(segment["precision"], segment["values"], int(local[-1]), segment.get("scale"),
                                     segment.get("bias")))
        entry_starts.append(int(indptr[r0]))
        by_dim = segment.get("scales") == "dim"  # else row-wise (every artifact before format 6)
        row_starts.append(local[:-1] if not by_dim else torch.zeros(0, dtype=torch.int64))
        own = block_starts[(block_starts >= first) & (block_starts < end)]
        block_entries.append(indptr[ranks[own]] - indptr[r0] if by_dim else None)
    return StoredValues(parts, entry_starts, row_starts, block_entries, int(section["dim"]))


def save_model(model: EmbeddingModel, path: str | os.PathLike, model_name: str, num_fields: int,
               options: Mapping[str, Any], precision: Precision = "fp32",
               block_starts: Sequence[int] = (0,), int_scales: str = "row") -> ArtifactBytes:
    """Write the compact artifact with its kept values at ``precision`` (one, or one per frequency block starting
    at ``block_starts``; int8/int4 scales per row or per block and dimension, ``int_scales``); its bytes per part. The backbone is recorded as ``model_name`` (a built-in's short name
    or ``package.module:ClassName``) with the keyword ``options`` it was built with, so :func:`load_model` rebuilds
    it."""
    section, projection = _embedding_parts(model.embedding, precision, block_starts, int_scales)
    rest = {"first_order": {k: v.cpu() for k, v in model.first_order.state_dict().items()},
            "backbone": {k: v.cpu() for k, v in model.backbone.state_dict().items()}}
    payload = {"format_version": FORMAT_VERSION,
               "model": {"name": model_name, "num_fields": num_fields, "options": dict(options)},
               "embedding": section, **projection, **rest}
    torch.save(payload, path)
    return ArtifactBytes(tensor_bytes([section, projection]), tensor_bytes(rest), Path(path).stat().st_size)


def embedding_bytes_of(model: EmbeddingModel, precision: Precision = "fp32",
                       block_starts: Sequence[int] = (0,), int_scales: str = "row") -> int:
    """The embedding bytes :func:`save_model` would write for ``model`` (projections included)."""
    return tensor_bytes(_embedding_parts(model.embedding, precision, block_starts, int_scales))


def _embedding_parts(emb: nn.Module, precision: Precision, block_starts: Sequence[int],
                     int_scales: str = "row") -> tuple[dict, dict]:
    """The embedding section and the projections (if any) of an embedding (packed once pruned; a uniform model's
    keeps every entry)."""
    section = compact_embedding(emb.kept_per_feature().cpu(), emb.kept_dims().cpu(),
                                emb.folded_values().float().cpu(), emb.dim, precision, block_starts, int_scales)
    return section, _projection(emb)


def _projection(embedding: nn.Module) -> dict:
    """The model's projections and the group (projection) of every feature, if it has them: per feature (uint8
    while the groups fit, else int32), or — whichever is smaller — as runs of equal groups (the first id of each
    run, int32, and its group): MDE's groups are frequency blocks, id ranges, so L runs instead of M bytes."""
    if embedding.projection is None:
        return {}
    groups = embedding.block_of.cpu()
    value = torch.uint8 if group_value_bytes(int(groups.max()) + 1) == 1 else torch.int32
    firsts = torch.nonzero(torch.diff(groups, prepend=groups[:1] - 1)).flatten()  # the first id of every run
    if groups_by_runs(firsts.numel(), groups.numel(), value.itemsize):
        stored = {"group_runs": firsts.to(torch.int32), "run_groups": groups[firsts].to(value)}
    else:
        stored = {"groups": groups.to(value)}
    return {"projection": {"weights": embedding.projection.detach().float().cpu(), **stored,
                           "by": embedding.projection_by}}


def _projection_groups(projection: dict, num_features: int) -> torch.Tensor:
    """The group of every feature as :func:`_projection` stored it (empty without projections)."""
    if "group_runs" in projection:
        firsts = projection["group_runs"].long()
        lengths = torch.diff(firsts, append=torch.tensor([num_features]))
        return torch.repeat_interleave(projection["run_groups"], lengths)
    return projection.get("groups", torch.zeros(0, dtype=torch.uint8))


def load_model(path: str | os.PathLike | io.BytesIO) -> EmbeddingModel:
    """Rebuild an inference model from the artifact: a :class:`~autosrh_ray.engine.packed.PackedEmbedding` over the kept
    values as stored — codes and fp16 values stay as they are, read back to float32 only where a batch looks them
    up (:class:`~autosrh_ray.engine.stored_values.StoredValues`; no α, no dense M×K table, no float copy of the kept
    values; row pointers in int32 while they fit) — the first-order weights and the backbone."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") not in READS_VERSIONS:
        raise ValueError(f"{path}: artifact format {payload.get('format_version')!r}, this version reads "
                         f"{' and '.join(map(str, READS_VERSIONS))}: re-run the workflow into its output to rewrite it")
    e = payload["embedding"]
    counts, kept_indptr, dims = _kept_layout(e)
    stored = stored_values(e, counts, kept_indptr)
    del kept_indptr
    dtype = torch.int32 if stored.count < torch.iinfo(torch.int32).max else torch.int64
    indptr = torch.zeros(int(e["num_features"]) + 1, dtype=dtype)
    torch.cumsum(counts, 0, dtype=dtype, out=indptr[1:])
    del counts
    num_features, dim = int(e["num_features"]), int(e["dim"])
    with torch.device("meta"):  # no M-sized allocation to overwrite: the stored weights are taken as they are
        first_order = FirstOrder(num_features)
    first_order.load_state_dict(payload["first_order"], assign=True)
    spec = payload["model"]
    options = spec.get("options")  # artifacts written before backbones took options: a built-in's tower
    if options is None:
        options = constructor_options(spec["name"], spec["hidden"], spec["dropout"], {})
    backbone = build_backbone(spec["name"], spec["num_fields"], dim, options)
    backbone.load_state_dict(payload["backbone"])
    projection = payload.get("projection") or {}
    groups = _projection_groups(projection, num_features)  # only a projection reads the groups
    lookup = PackedEmbedding(indptr, dims, torch.zeros(0), dim, groups, None, projection.get("weights"),
                             projection.get("by"), stored=stored)
    lookup.requires_grad_(False)
    return EmbeddingModel(lookup, first_order, backbone).eval()
