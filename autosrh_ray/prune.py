"""Fine-grained pruning to a target compression rate (paper Alg. 3, Eq. 15) and the mixed dimension scheme.

Score = |E ⊙ α[block]| (AutoSrh) or |E| (magnitude pruning of a uniform model). Keep exactly
round(M·K / CR) entries: the highest scores, ties broken by flat index (lower first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .config import PruneConfig
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
    """|E ⊙ α[block]| for a soft-selection embedding, |E| for a uniform one, the margin above its threshold for
    PEP's (:meth:`~autosrh_ray.pep.ThresholdEmbedding.pruning_scores`); shape (M, K)."""
    own = getattr(embedding, "pruning_scores", None)
    return own() if own is not None else embedding.selected_weight().abs()


def prune(embedding: SoftSelectionEmbedding, cr: float) -> torch.Tensor:
    """Compute the mask for ``cr``, install it on ``embedding`` (α frozen, pruned entries zeroed); return it."""
    return prune_to(embedding, kept_count(embedding.num_features, embedding.dim, cr))


def prune_to(embedding: SoftSelectionEmbedding, keep: int) -> torch.Tensor:
    """Keep exactly ``keep`` entries (at most M·K) by score; install the mask and return it."""
    mask = topk_mask(pruning_scores(embedding), keep)
    embedding.set_mask(mask)
    return mask


@dataclass(frozen=True)
class Budget:
    """One pruning budget: a name (``cr10``, ``params50000``), the kept entries and the CR it asks for."""

    name: str
    kept: int
    cr: float

    @property
    def tag(self) -> str:
        """Path-safe name (Train run names, artifact folders)."""
        return self.name.replace(".", "_")


def budgets(prune_config: PruneConfig, num_features: int, dim: int) -> list[Budget]:
    """``prune.cr`` entries (relative to M·K of this model), then ``prune.params`` entries (absolute, capped at
    M·K: a table smaller than the budget keeps everything)."""
    uniform = num_features * dim
    out = [Budget(f"cr{cr:g}", kept_count(num_features, dim, cr), cr) for cr in prune_config.crs]
    for params in prune_config.param_budgets:
        kept = min(params, uniform)
        out.append(Budget(f"params{params}", kept, uniform / kept))
    return out


def study_budget(prune_config: PruneConfig, num_features: int, base_dim: int) -> int:
    """The one absolute budget every study trial is pruned to, whatever its K: the first ``prune.params``, else
    M·K / the first ``prune.cr`` with the workflow's own K."""
    params: Optional[list[int]] = prune_config.param_budgets
    if params:
        return params[0]
    return kept_count(num_features, base_dim, prune_config.crs[0])


def kept_dims(mask: torch.Tensor) -> torch.Tensor:
    """Per-feature kept dimension count (the sizes of the mixed dimension scheme D), shape (M,)."""
    return mask.sum(dim=1)
