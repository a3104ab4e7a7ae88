"""The compressed layout of a pruned embedding: only the kept entries, stored CSR by feature.

::

    feature i's kept dims:   dims[indptr[i] : indptr[i+1]]          (uint8, ascending)
    their values:            kept.weight[indptr[i] : indptr[i+1]]   (the raw E values, trained)
    looked-up row i:         zeros(K); row[dims] = values ⊙ α[block_of[i], dims]; then the projection, if any

One module (:class:`PackedEmbedding`) serves the retrain (raw values trained, the searched α applied per
(block, dimension) in the forward, so every step equals the masked dense retrain's), the compact artifact
(values folded with α, no α) and ``predict``. Memory: the kept values (+ their optimiser state while training),
one byte per kept entry for its dimension and M+1 row pointers; never an M×K table.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .embedding import SoftSelectionEmbedding, project_by_block
from .precision_plan import Precision, segments
from .quantize import PRECISIONS, column_groups, fake_quantized
from .stored_values import StoredValues

PREFIX = "embedding."
VALUES, INDPTR, DIMS = "kept.weight", "indptr", "dims"
# present once the retrain is quantisation-aware (quant_dim_scales: 1 where int codes share a (block, dim) scale)
QUANT_BUFFERS = ("quant_starts", "quant_precisions", "quant_dim_scales")
DENSE_WEIGHT = "embedding.weight"  # the dense table's key inside the embedding module
PACK_ROWS = 1 << 18  # rows per chunk when packing (bounds the transient index tensors)


class PackedEmbedding(nn.Module):
    """Kept entries of an (M, K) embedding in CSR layout, looked up as (B, F, K) rows (zeros where pruned).

    Args:
        indptr: (M+1,) int row pointers. dims: (nnz,) uint8 kept dimension per entry. values: (nnz,) values.
        block_of: (M,) block (or projection group) of every feature. alpha: (L, K) frozen scale per block and
        dimension, or None. projection: (G, K, K) matrices applied after the lookup, per ``block_of`` group
        (``projection_by="block"``) or per field (``"field"``). sparse: sparse gradients for the kept values.
    """

    def __init__(self, indptr: torch.Tensor, dims: torch.Tensor, values: torch.Tensor, dim: int,
                 block_of: torch.Tensor, alpha: Optional[torch.Tensor] = None,
                 projection: Optional[torch.Tensor] = None, projection_by: Optional[str] = None,
                 sparse: bool = False, stored: Optional[StoredValues] = None):
        super().__init__()
        if projection_by not in (None, "block", "field"):
            raise ValueError(f"projection_by must be None, 'block' or 'field' (got {projection_by!r})")
        self.dim = int(dim)
        self.kept = nn.Embedding(int(values.shape[0]), 1, sparse=sparse, _weight=values.reshape(-1, 1))
        self.register_buffer("indptr", indptr, persistent=True)
        self.register_buffer("dims", dims, persistent=True)
        self.register_buffer("block_of", block_of, persistent=True)
        self.register_buffer("alpha", alpha, persistent=True)  # frozen: the mask and α are fixed after pruning
        self.projection_by = projection_by
        self.projection: Optional[nn.Parameter] = nn.Parameter(projection) if projection is not None else None
        # quantisation-aware training (prune.quant_aware): the first feature id of each segment and the index in
        # PRECISIONS its values are stored at; the forward reads the values as the artifact will store them
        self.register_buffer("quant_starts", None, persistent=True)
        self.register_buffer("quant_precisions", None, persistent=True)
        self.register_buffer("quant_dim_scales", None, persistent=True)
        # a loaded artifact: the values as stored (codes, fp16), read where looked up; ``values`` is then empty
        self.stored = stored

    @staticmethod
    def empty(num_features: int, dim: int, block_of: torch.Tensor, alpha: Optional[torch.Tensor] = None,
              projection: Optional[torch.Tensor] = None, projection_by: Optional[str] = None,
              sparse: bool = False) -> "PackedEmbedding":
        """A module with nothing kept yet; loading a packed state sizes it (:meth:`_load_from_state_dict`)."""
        return PackedEmbedding(torch.zeros(num_features + 1, dtype=torch.int64), torch.zeros(0, dtype=torch.uint8),
                               torch.zeros(0), dim, block_of, alpha, projection, projection_by, sparse)

    @property
    def num_features(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def values(self) -> torch.Tensor:
        """The kept values (nnz,): a view of the trained parameter, or (a loaded artifact) read back from the
        stored values."""
        if self.stored is not None:
            return self.stored.read(torch.arange(self.stored.count, device=self.indptr.device), self.dims)
        return self.kept.weight.view(-1)

    def kept_count(self) -> int:
        return int(self.dims.shape[0])

    def kept_per_feature(self) -> torch.Tensor:
        """(M,) kept dimensions of every feature (the sizes of the mixed dimension scheme D)."""
        return (self.indptr[1:] - self.indptr[:-1]).long()

    def kept_dims(self) -> torch.Tensor:
        """(nnz,) uint8: the dimension of every kept entry, feature by feature."""
        return self.dims

    def feature_of_entry(self) -> torch.Tensor:
        """(nnz,) the feature of every kept entry."""
        return entry_features(self.indptr, self.kept_count())

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """ids (B, F) long, values (B, F) float → (B, F, K). The rows of the batch's distinct ids are built once
        from their kept entries, then gathered for every position (popular ids repeat many times in a batch)."""
        unique, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        rows = self.rows(unique)
        out = rows.index_select(0, inverse).reshape(*ids.shape, self.dim)
        if self.projection_by == "block":
            out = project_by_block(out, self.block_of[ids].long(), self.projection)
        elif self.projection_by == "field":
            out = torch.einsum("bfk,fkj->bfj", out, self.projection)
        return out * values.unsqueeze(-1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, K) rows of the 1-D ``ids``: kept values (⊙ α[block, dim]) at their dimensions, zeros elsewhere."""
        n, k = ids.numel(), self.dim
        start = self.indptr[ids].long()
        counts = self.indptr[ids + 1].long() - start
        total = int(counts.sum())
        row = torch.repeat_interleave(torch.arange(n, device=ids.device), counts, output_size=total)
        first = torch.cumsum(counts, 0) - counts  # where each row's entries start in the list of looked-up entries
        slot = torch.arange(total, device=ids.device) + torch.repeat_interleave(start - first, counts,
                                                                                output_size=total)
        dim = self.dims[slot].long()
        # sparse: an (nnz, 1) embedding lookup gives SparseAdam its sparse gradient; dense: index_select's backward
        # is an index_add, much cheaper on the CPU than the embedding's sort-based dense backward
        if self.stored is not None:
            kept = self.stored.read(slot, dim)
        else:
            kept = self.kept(slot).squeeze(1) if self.kept.sparse else self.values.index_select(0, slot)
        if self.alpha is not None:
            kept = kept * self.alpha.reshape(-1)[self.block_of[ids].long()[row] * k + dim]
        if self.quant_starts is not None:
            kept = self._as_stored(kept, ids, row, n, dim)
        return torch.zeros(n * k, dtype=kept.dtype, device=ids.device).index_put((row * k + dim,), kept).reshape(n, k)

    def _as_stored(self, kept: torch.Tensor, ids: torch.Tensor, row: torch.Tensor, n: int,
                   dim: torch.Tensor) -> torch.Tensor:
        """The looked-up rows' folded values (every entry of each row) read back at their segment's precision,
        the gradient straight through. With ``dim`` scales an integer group's range is taken over every kept
        value of its block and dimension (the artifact's scale), not only the batch's."""
        segment = torch.searchsorted(self.quant_starts, ids, right=True) - 1
        precision_of_entry = self.quant_precisions[segment][row]
        by_dim = self.quant_dim_scales is not None and bool(self.quant_dim_scales.any())
        groups, every, n_groups = row, None, n
        if by_dim:
            groups = column_groups(dim, self.block_of[ids].long()[row], self.dim)
            n_groups = int(self.block_of.max()) * self.dim + self.dim if self.num_features else self.dim
            every = (self.folded_values(), column_groups(self.dims, self.block_of.long()[self.feature_of_entry()],
                                                         self.dim))
        out = kept
        for code in torch.unique(precision_of_entry).tolist():
            if PRECISIONS[code] != "fp32":
                chosen = precision_of_entry == code
                integer = by_dim and PRECISIONS[code] != "fp16"
                out = out.masked_scatter(chosen, fake_quantized(
                    kept[chosen], groups[chosen] if integer else row[chosen], n_groups if integer else n,
                    PRECISIONS[code], every if integer else None))
        return out

    @torch.no_grad()
    def folded_values(self) -> torch.Tensor:
        """The kept values times α at their (block, dimension): what inference needs (no α)."""
        values = self.values.detach()
        if self.alpha is None:
            return values.clone()
        blocks = self.block_of.long()[self.feature_of_entry()]
        return values * self.alpha.reshape(-1)[blocks * self.dim + self.dims.long()]

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        """The (M, K) table this layout stands for (raw values, zeros where pruned); for checks on small tables."""
        out = torch.zeros(self.num_features, self.dim, dtype=self.values.dtype, device=self.values.device)
        out[self.feature_of_entry(), self.dims.long()] = self.values.detach()
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Size the kept entries (values, dims) and row pointers to the state's before loading it."""
        for name in (INDPTR, DIMS, *QUANT_BUFFERS):
            saved = state_dict.get(prefix + name)
            mine = self._buffers[name]
            if saved is not None and (mine is None or saved.shape != mine.shape):
                self._buffers[name] = torch.empty_like(saved, device=self.indptr.device)
        saved = state_dict.get(prefix + VALUES)
        if saved is not None and saved.shape != self.kept.weight.shape:
            weight = self.kept.weight
            self.kept.weight = nn.Parameter(torch.empty(saved.shape, dtype=weight.dtype, device=weight.device))
            self.kept.num_embeddings = int(saved.shape[0])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class MaskedEmbedding(SoftSelectionEmbedding):
    """The layout the packed retrain replaces, kept as its reference (tests, ``benchmarks/engine_throughput.py``):
    the dense M×K table, pruned entries zeroed, with the 0/1 mask and the frozen α multiplied in the forward. A
    pruned entry gets no gradient, so Adam never moves it; memory and optimiser work stay M×K."""

    def __init__(self, dense: SoftSelectionEmbedding, mask: torch.Tensor):
        super().__init__(dense.block_of, dense.dim, soft_selection=dense.alpha is not None,
                         sparse=dense.embedding.sparse)
        self.to(dense.weight.dtype).load_state_dict(dense.state_dict())
        self.register_buffer("mask", mask.to(dense.weight.dtype))
        with torch.no_grad():
            self.weight.mul_(self.mask)
        if self.alpha is not None:
            self.alpha.requires_grad_(False)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        scale = self.mask[ids] * (self.alpha[self.block_of[ids]] if self.alpha is not None else 1.0)
        return self.embedding(ids) * scale * values.unsqueeze(-1)


def is_packed(state: dict) -> bool:
    """Whether a model state carries a packed (pruned) embedding."""
    return PREFIX + INDPTR in state


@torch.no_grad()
def pack(weight: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indptr int64 (M+1), dims uint8 (nnz), values (nnz)) of ``weight`` (M, K) at the True entries of ``keep``,
    row-major (by feature, then dimension); built in row chunks so the transients stay small."""
    m = weight.shape[0]
    counts = keep.sum(dim=1)
    indptr = torch.zeros(m + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    nnz = int(indptr[-1])
    dims = torch.empty(nnz, dtype=torch.uint8)
    values = torch.empty(nnz, dtype=weight.dtype)
    for lo in range(0, m, PACK_ROWS):
        hi = min(lo + PACK_ROWS, m)
        rows, cols = torch.nonzero(keep[lo:hi], as_tuple=True)
        a, b = int(indptr[lo]), int(indptr[hi])
        dims[a:b] = cols.to(torch.uint8)
        values[a:b] = weight[lo:hi][rows, cols]
    return indptr, dims, values


def entry_features(indptr: torch.Tensor, nnz: int) -> torch.Tensor:
    """(nnz,) the feature of every entry of a CSR layout with row pointers ``indptr``."""
    return torch.repeat_interleave(torch.arange(indptr.shape[0] - 1, device=indptr.device),
                                   (indptr[1:] - indptr[:-1]).long(), output_size=nnz)


def with_kept_values_of(state: dict, weight: torch.Tensor) -> dict:
    """A packed state whose kept values are taken from the dense ``weight`` (M, K) at the same positions (e.g. the
    initial values, to rewind)."""
    dims = state[PREFIX + DIMS]
    rows = entry_features(state[PREFIX + INDPTR], int(dims.shape[0]))
    return {**state, PREFIX + VALUES: weight[rows, dims.long()].reshape(-1, 1)}


def packed_state(state: dict, keep: torch.Tensor) -> dict:
    """A dense model state with its embedding packed to the True entries of ``keep`` (M, K): the raw values, the
    block index, α (frozen from here on) and the projections carry over; everything else of the embedding (PEP's
    thresholds, a searcher's controller) is left behind."""
    weight = state[PREFIX + DENSE_WEIGHT]
    indptr, dims, values = pack(weight, keep.bool())
    out = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    out.update({PREFIX + VALUES: values.reshape(-1, 1), PREFIX + INDPTR: indptr, PREFIX + DIMS: dims,
                PREFIX + "block_of": state[PREFIX + "block_of"]})
    for name in ("alpha", "projection"):
        if PREFIX + name in state:
            out[PREFIX + name] = state[PREFIX + name]
    return out


def quantisation_buffers(precision: Precision, block_starts: Sequence[int], num_features: int,
                         int_scales: str = "row") -> dict:
    """The buffers (:data:`QUANT_BUFFERS`) that make a packed embedding read its values at ``precision`` (int
    scales per row or per block and dimension)."""
    spans = segments(precision, block_starts, num_features)
    return {"quant_starts": torch.tensor([a for a, _, _ in spans], dtype=torch.long),
            "quant_precisions": torch.tensor([PRECISIONS.index(p) for *_, p in spans], dtype=torch.long),
            "quant_dim_scales": torch.tensor([int_scales == "dim"], dtype=torch.bool)}


def quantisation_aware(state: dict, precision: Precision, block_starts: Sequence[int], int_scales: str = "row") -> dict:
    """A packed state whose retrain reads the kept values as the artifact will store them (straight-through
    gradients: quantisation-aware training)."""
    m = int(state[PREFIX + INDPTR].shape[0]) - 1
    buffers = quantisation_buffers(precision, block_starts, m, int_scales)
    return {**state, **{PREFIX + k: v for k, v in buffers.items()}}


def kept_of(state: dict) -> int:
    """Kept entries of a packed state."""
    return int(state[PREFIX + DIMS].shape[0])
