"""Fine-grained pruning to a number of kept entries (paper Alg. 3, Eq. 15): the mask of the best entries.

Score = |E ⊙ α[block]| (AutoSrh) or |E| (magnitude pruning of a uniform model). Keep exactly
round(M·K / CR) entries: the highest scores, ties broken by flat index (lower first).
"""
from __future__ import annotations

import torch

from .packed import packed_state


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


def pruned_state(model: torch.nn.Module, keep: int) -> dict:
    """The model's state with its embedding pruned to its ``keep`` best entries (|E ⊙ α[block]| for AutoSrh, |E|
    for a uniform model, PEP's margin) and packed (:func:`~autosrh_ray.engine.packed.packed_state`): the state a retrain
    starts from."""
    mask = topk_mask(model.embedding.pruning_scores(), keep)
    return packed_state(model.state_dict(), mask)
