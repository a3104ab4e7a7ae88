"""Fine-grained pruning to a target compression rate (paper Alg. 3, Eq. 15) and the mixed dimension scheme.

Score = |E ⊙ α[block]| (AutoSrh) or |E| (magnitude pruning of a uniform model). Keep exactly
round(M·K / CR) entries: the highest scores, ties broken by flat index (lower first).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from ..config import PruneConfig
from .embedding import SoftSelectionEmbedding
from .packed import packed_state
from .precision_plan import Precision, precision_name


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
    for a uniform model, PEP's margin) and packed (:func:`~autosrh_ray.engine.packed.packed_state`): the state a retrain
    starts from."""
    mask = topk_mask(model.embedding.pruning_scores(), keep)
    return packed_state(model.state_dict(), mask)


@dataclass(frozen=True)
class Budget:
    """One pruning budget: a name (``cr10``, ``params50000``, ``bytes_cr40-int8``), the kept entries and the CR it
    asks for, and how its artifact stores the values (one precision, or one per frequency block starting at
    ``block_starts``). A byte budget (``bytes``: embedding bytes) is one candidate per precision, grouped under
    ``group``; its kept entries (and a mixed candidate's precision per block) are known once the scores are
    (:meth:`resolved`)."""

    name: str
    kept: int
    cr: float
    precision: Precision = "fp32"
    bytes: Optional[int] = None
    group: str = ""
    block_starts: tuple[int, ...] = (0,)

    @property
    def tag(self) -> str:
        """Path-safe name (Train run names, artifact folders)."""
        return self.name.replace(".", "_")

    def resolved(self, scores: torch.Tensor) -> "Budget":
        """A byte budget with its kept entries: as many of the best ``scores`` (M, K) as fit its bytes (a mixed
        candidate first chooses its precision per block, :func:`~autosrh_ray.artifact.budget.mixed_precision`)."""
        if self.bytes is None:
            return self
        from ..artifact.budget import kept_for_bytes, mixed_precision

        precision = self.precision
        if precision in MIXED_CANDIDATES:
            precision = mixed_precision(scores, self.bytes, self.block_starts, MIXED_CANDIDATES[precision])
            precision = precision[0] if len(set(precision)) == 1 else precision  # one precision after all
        kept = max(1, kept_for_bytes(scores, self.bytes, precision, self.block_starts))
        return replace(self, kept=kept, cr=scores.numel() / kept, precision=precision)


BYTE_PRECISIONS = ("fp32", "fp16", "int8", "int4")  # the candidates of a byte budget under precision: auto
# ... and, with more than one block, a precision per block guided by the kept dims (the rarer half's floor)
MIXED_CANDIDATES = {"mixed": "fp16", "mixed-int4": "int4"}


def budgets(prune_config: PruneConfig, num_features: int, dim: int,
            block_starts: Sequence[int] = (0,)) -> list[Budget]:
    """Byte budgets first (``prune.bytes_cr``: UE's dense fp32 table M·K·4 ÷ it, then ``prune.bytes``; under
    ``prune.precision: auto`` one candidate per precision, and two per-block ones with more than one block), then
    ``prune.cr`` entries (relative to M·K of this model), then ``prune.params`` entries (absolute, capped at M·K: a
    table smaller than the budget keeps everything). ``block_starts``: the first id of each frequency block."""
    uniform = num_features * dim
    starts = tuple(int(b) for b in block_starts)
    chosen = prune_config.precision
    stored: Precision = tuple(chosen) if isinstance(chosen, list) else "fp32" if chosen == "auto" else chosen
    if chosen != "auto":
        candidates: tuple = (stored,)
    else:
        candidates = BYTE_PRECISIONS + (tuple(MIXED_CANDIDATES) if len(starts) > 1 else ())
    out = []
    for group, size in ([(f"bytes_cr{c:g}", int(uniform * 4 / c)) for c in prune_config.bytes_crs]
                        + [(f"bytes{b}", b) for b in prune_config.byte_budgets]):
        out += [Budget(f"{group}-{precision_name(p)}", 0, 0.0, p, size, group, starts) for p in candidates]
    out += [Budget(f"cr{cr:g}", kept_count(num_features, dim, cr), cr, stored, block_starts=starts)
            for cr in prune_config.crs]
    for params in prune_config.param_budgets:
        kept = min(params, uniform)
        out.append(Budget(f"params{params}", kept, uniform / kept, stored, block_starts=starts))
    return out


def study_budget(prune_config: PruneConfig, num_features: int, base_dim: int) -> int:
    """The one absolute budget every study trial is pruned to, whatever its K: the first ``prune.params``, else
    M·K / the first ``prune.cr`` with the workflow's own K, else the first byte budget's entries at fp32 (its bytes
    ÷ 4, the index aside)."""
    params: Optional[list[int]] = prune_config.param_budgets
    if params:
        return params[0]
    if prune_config.crs:
        return kept_count(num_features, base_dim, prune_config.crs[0])
    first = (num_features * base_dim * 4 / prune_config.bytes_crs[0] if prune_config.bytes_crs
             else prune_config.byte_budgets[0])
    return max(1, int(first // 4))

