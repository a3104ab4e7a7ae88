"""Fine-grained pruning to a target compression rate (paper Alg. 3, Eq. 15) and the mixed dimension scheme.

Score = |E ⊙ α[block]| (AutoSrh) or |E| (magnitude pruning of a uniform model). Keep exactly
round(M·K / CR) entries: the highest scores, ties broken by flat index (lower first).
"""
from __future__ import annotations

import torch

from .embedding import SoftSelectionEmbedding


def kept_count(num_features: int, dim: int, cr: float) -> int:
    """round(M·K / CR), half up, at least 1."""
    return max(1, int(num_features * dim / cr + 0.5))


def topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` highest scores; among equal scores the lower flat index wins. O(n)."""
    flat = scores.detach().flatten()
    n = flat.numel()
    keep = min(max(keep, 0), n)
    mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if keep == 0:
        return mask.view_as(scores)
    threshold = torch.kthvalue(flat.cpu(), n - keep + 1).values.to(flat.device)  # the keep-th largest score
    above = flat > threshold
    mask |= above
    ties = torch.nonzero(flat == threshold).flatten()  # ascending flat index
    mask[ties[: keep - int(above.sum())]] = True
    return mask.view_as(scores)


def pruning_scores(embedding: SoftSelectionEmbedding) -> torch.Tensor:
    """|E ⊙ α[block]| for a soft-selection embedding, |E| for a uniform one; shape (M, K)."""
    return embedding.selected_weight().abs()


def prune(embedding: SoftSelectionEmbedding, cr: float) -> torch.Tensor:
    """Compute the mask for ``cr``, install it on ``embedding`` (α frozen, pruned entries zeroed); return it."""
    scores = pruning_scores(embedding)
    mask = topk_mask(scores, kept_count(embedding.num_features, embedding.dim, cr))
    embedding.set_mask(mask)
    return mask


def kept_dims(mask: torch.Tensor) -> torch.Tensor:
    """Per-feature kept dimension count (the sizes of the mixed dimension scheme D), shape (M,)."""
    return mask.sum(dim=1)
