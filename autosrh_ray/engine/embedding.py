"""Soft-selection embedding (paper Eq. 8) and the first-order (linear) term.

::

    ids (B, F) ──► E[ids] (B, F, K) ──⊙ α[block(ids)] ──⊙ value (B, F, 1) ──► (B, F, K)

α ∈ [0,1]^{L×K} starts at ones; ``alpha=None`` gives a uniform embedding (UE). After pruning a model retrains in
the compressed layout of :mod:`autosrh_ray.engine.packed` (the kept entries only, α frozen).
With ``projection`` each row is then multiplied by a K×K matrix (identity at the start), one per block of
``block_of`` (``"block"``: MDE's frequency blocks, AutoEmb's chosen candidates) or per field (``"field"``: AutoDim's
retrain): a feature kept at its first d dims is projected to the common width K by the d rows of its matrix that
meet non-zero inputs.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

SCORE_ROWS = 1 << 18  # rows per chunk when scaling pruning scores by α (no M×K gather of α)

class EmbeddingTable(nn.Module):
    """What every embedding module exposes about its table ``self.embedding`` (an ``nn.Embedding``)."""

    embedding: nn.Embedding

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    @property
    def num_features(self) -> int:
        return self.embedding.num_embeddings

    @property
    def dim(self) -> int:
        return self.embedding.embedding_dim

    def kept_count(self) -> int:
        """Nothing is pruned in a dense table: M·K."""
        return self.num_features * self.dim

    def kept_per_feature(self) -> torch.Tensor:
        """(M,) kept dimensions per feature: all K."""
        return torch.full((self.num_features,), self.dim, dtype=torch.long)

    def kept_dims(self) -> torch.Tensor:
        """(M·K,) uint8: the dimension of every kept entry, feature by feature (all of them: 0..K-1 each)."""
        return torch.arange(self.dim, dtype=torch.uint8).repeat(self.num_features)


class SoftSelectionEmbedding(EmbeddingTable):
    """E (M×K) with optional soft selection α (L×K) shared by frequency blocks.

    Args:
        block_of: (M,) block index of every global id (ids are frequency-ordered, so blocks are id ranges).
        dim: base dimension K.
        soft_selection: learn α (AutoSrh); False gives a uniform embedding.
        sparse: produce sparse gradients for E (for ``torch.optim.SparseAdam``).
        init_std: std of E's normal initialisation.

    Example::

        emb = SoftSelectionEmbedding(torch.tensor([0, 0, 1]), dim=4)
        out = emb(torch.tensor([[0, 2]]), torch.ones(1, 2))   # (1, 2, 4)
    """

    def __init__(self, block_of: torch.Tensor, dim: int, soft_selection: bool = True, sparse: bool = False,
                 init_std: float = 0.01, projection: Optional[str] = None, num_fields: int = 0,
                 projection_groups: int = 0):
        super().__init__()
        num_features = int(block_of.shape[0])
        num_blocks = int(block_of.max().item()) + 1 if num_features else 1
        self.embedding = nn.Embedding(num_features, dim, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.register_buffer("block_of", block_of.to(torch.long), persistent=True)
        self.alpha: Optional[nn.Parameter] = nn.Parameter(torch.ones(num_blocks, dim)) if soft_selection else None
        # "block": one K×K matrix per frequency block (MDE); "field": one per field, i.e. per column of ids (AutoDim)
        if projection not in (None, "block", "field"):
            raise ValueError(f"projection must be None, 'block' or 'field' (got {projection!r})")
        self.projection_by = projection
        groups = (projection_groups or num_blocks) if projection == "block" else num_fields
        self.projection: Optional[nn.Parameter] = (
            nn.Parameter(torch.eye(dim).repeat(groups, 1, 1)) if projection else None)

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """ids (B, F) long, values (B, F) float → (B, F, K)."""
        out = self.embedding(ids)
        if self.alpha is not None:
            out = out * self.alpha[self.block_of[ids]]
        if self.projection_by == "block":
            out = project_by_block(out, self.block_of[ids], self.projection)
        elif self.projection_by == "field":
            out = torch.einsum("bfk,fkj->bfj", out, self.projection)
        return out * values.unsqueeze(-1)

    @torch.no_grad()
    def folded_values(self) -> torch.Tensor:
        """Ẽ = E ⊙ α[block] flattened feature by feature (every entry is kept): what inference needs."""
        out = self.weight.detach().clone()
        if self.alpha is not None:
            out = out * self.alpha.detach()[self.block_of]
        return out.reshape(-1)

    @torch.no_grad()
    def pruning_scores(self) -> torch.Tensor:
        """|E ⊙ α[block]| (AutoSrh) or |E| (UE), shape (M, K); one M×K tensor, α applied in row chunks."""
        scores = self.weight.detach().abs()
        if self.alpha is not None:
            alpha = self.alpha.detach()
            for lo in range(0, scores.shape[0], SCORE_ROWS):
                scores[lo:lo + SCORE_ROWS] *= alpha[self.block_of[lo:lo + SCORE_ROWS]]
        return scores


class CandidatePrefixes(EmbeddingTable):
    """A search-time embedding whose candidate dimensions d_1 < … < d_N are prefixes of one K-wide row per feature
    (the weight sharing of AutoDim and AutoEmb); subclasses hold the architecture weights ``alpha`` (logits, so the
    bi-level step applies plain gradients) and mix the projected candidates. Nothing is pruned while searching."""

    alpha_is_logits = True

    def __init__(self, num_features: int, dim: int, candidates, sparse: bool = False, init_std: float = 0.01):
        super().__init__()
        self.embedding = nn.Embedding(num_features, dim, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.register_buffer("candidates", torch.tensor(list(candidates), dtype=torch.long), persistent=True)
        self.register_buffer("candidate_mask", (torch.arange(dim).unsqueeze(0)
                                                < self.candidates.unsqueeze(1)).float(), persistent=False)

    def candidate_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, F, N, K): candidate n of each looked-up row keeps its first d_n dimensions."""
        return self.embedding(ids).unsqueeze(2) * self.candidate_mask


def project_by_block(rows: torch.Tensor, blocks: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``rows[..., :] @ projection[block]`` for rows (..., K) with their blocks (...): one matmul per block (never
    a (rows, K, K) gather)."""
    flat, which = rows.reshape(-1, rows.shape[-1]), blocks.reshape(-1)
    out = torch.zeros_like(flat)
    for b in range(projection.shape[0]):
        idx = torch.nonzero(which == b).squeeze(1)
        if idx.numel():
            out = out.index_copy(0, idx, flat.index_select(0, idx) @ projection[b])
    return out.reshape(rows.shape)


class FirstOrder(nn.Module):
    """A never-pruned 1-dim weight per feature plus a global bias: FM linear, W&D wide, MF biases.

    (B, F) ids and values → (B,) ``bias + Σ_f w[id_f]·value_f``.
    """

    def __init__(self, num_features: int, sparse: bool = False, bias: float = 0.0):
        super().__init__()
        self.weight = nn.Embedding(num_features, 1, sparse=sparse)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.tensor([float(bias)]))

    def forward(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return (self.weight(ids).squeeze(-1) * values).sum(dim=1) + self.bias
