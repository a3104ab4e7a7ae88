"""Fine-grained pruning to a target compression rate (paper Alg. 3, Eq. 15) and the mixed dimension scheme.

Score = |E ⊙ α[block]| (AutoSrh) or |E| (magnitude pruning of a uniform model). Keep exactly
round(M·K / CR) entries: the highest scores, ties broken by flat index (lower first).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .config import PruneConfig
from .embedding import SoftSelectionEmbedding
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


def prune_mask(embedding: SoftSelectionEmbedding, cr: float) -> torch.Tensor:
    """The (M, K) boolean mask of the entries ``cr`` keeps."""
    return topk_mask(embedding.pruning_scores(), kept_count(embedding.num_features, embedding.dim, cr))


def pruned_state(model: torch.nn.Module, keep: int) -> dict:
    """The model's state with its embedding pruned to its ``keep`` best entries (|E ⊙ α[block]| for AutoSrh, |E|
    for a uniform model, PEP's margin) and packed (:func:`~autosrh_ray.packed.packed_state`): the state a retrain
    starts from."""
    mask = topk_mask(model.embedding.pruning_scores(), keep)
    return packed_state(model.state_dict(), mask)


@dataclass(frozen=True)
class Budget:
    """One pruning budget: a name (``cr10``, ``params50000``, ``bytes_cr40-int8``), the kept entries and the CR it
    asks for, and how its artifact stores the values. A byte budget (``bytes``: embedding bytes) is one candidate
    per precision, grouped under ``group``; its kept entries are known once the scores are (:meth:`resolved`)."""

    name: str
    kept: int
    cr: float
    precision: str = "fp32"
    bytes: Optional[int] = None
    group: str = ""

    @property
    def tag(self) -> str:
        """Path-safe name (Train run names, artifact folders)."""
        return self.name.replace(".", "_")

    def resolved(self, scores: torch.Tensor) -> "Budget":
        """A byte budget with its kept entries: as many of the best ``scores`` (M, K) as fit its bytes."""
        if self.bytes is None:
            return self
        from .bytes_budget import kept_for_bytes

        kept = max(1, kept_for_bytes(scores, self.bytes, self.precision))
        return replace(self, kept=kept, cr=scores.numel() / kept)


BYTE_PRECISIONS = ("fp32", "fp16", "int8", "int4")  # the candidates of a byte budget under precision: auto


def budgets(prune_config: PruneConfig, num_features: int, dim: int) -> list[Budget]:
    """Byte budgets first (``prune.bytes_cr``: UE's dense fp32 table M·K·4 ÷ it, then ``prune.bytes``; one
    candidate per precision under ``prune.precision: auto``), then ``prune.cr`` entries (relative to M·K of this
    model), then ``prune.params`` entries (absolute, capped at M·K: a table smaller than the budget keeps
    everything)."""
    uniform = num_features * dim
    stored = "fp32" if prune_config.precision == "auto" else prune_config.precision
    precisions = BYTE_PRECISIONS if prune_config.precision == "auto" else (prune_config.precision,)
    out = []
    for group, size in ([(f"bytes_cr{c:g}", int(uniform * 4 / c)) for c in prune_config.bytes_crs]
                        + [(f"bytes{b}", b) for b in prune_config.byte_budgets]):
        out += [Budget(f"{group}-{p}", 0, 0.0, p, size, group) for p in precisions]
    out += [Budget(f"cr{cr:g}", kept_count(num_features, dim, cr), cr, stored) for cr in prune_config.crs]
    for params in prune_config.param_budgets:
        kept = min(params, uniform)
        out.append(Budget(f"params{params}", kept, uniform / kept, stored))
    return out


def study_budget(prune_config: PruneConfig, num_features: int, base_dim: int) -> int:
    """The one absolute budget every study trial is pruned to, whatever its K: the first ``prune.params``, else
    M·K / the first ``prune.cr`` with the workflow's own K."""
    params: Optional[list[int]] = prune_config.param_budgets
    if params:
        return params[0]
    return kept_count(num_features, base_dim, prune_config.crs[0])

