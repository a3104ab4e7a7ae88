"""Dimensions fixed before training, each candidate scheme trained from the initial state with its mask and, per
budget, the best by validation kept: ``grid`` (UE at every K' of ``search.grid_K``), ``random`` (random per-block
dimensions scaled to the budget, ``search.random_trials`` draws) and ``mde`` (mixed dimension embeddings, Ginart et
al.: d_b ∝ popularity_b ** ``search.mde_temperature``, per-block projections)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Optional

import numpy as np

from ..artifact.budget import MIXED_CANDIDATES, Budget, largest_within, scheme_bytes
from ..config import Config
from ..engine.features import FeatureSpace, block_index
from ..engine.metrics import validation_loss
from ..engine.mixed_dims import (DimsCandidate, candidate, capped_dims, first_dims_mask, mde_block_dims,
                                 random_block_dims)
from ..engine.packed import packed_state
from ..engine.training import FitResult
from ..logs import Log
from .graph import EMBEDDING, StageExecutor, StageResult, run_budgets, side_by_side, train_stage
from .registry import Method

# (config, features, block_of, kept entries, trial, budget key) -> the dimension of every block
BlockDims = Callable[[Config, FeatureSpace, np.ndarray, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Schemes:
    """One family of fixed schemes: the candidates it trains for a budget, whether its projections (one per
    frequency block) count in its bytes, and whether every candidate is also reported as a point of its own."""

    candidates: Callable[[Config, FeatureSpace, Budget], list[DimsCandidate]]
    projected: bool = False
    every_candidate_a_point: bool = False


def grid_candidates(config: Config, features: FeatureSpace, budget: Budget) -> list[DimsCandidate]:
    """UE at every K' of ``search.grid_K`` (capped at K); the same for every budget."""
    s = config.search
    one = np.zeros(features.num_features, dtype=np.int64)
    return [candidate(f"K{k}", np.array([k]), one) for k in capped_dims(s.grid_K, s.K)]


def scaled_candidates(config: Config, features: FeatureSpace, budget: Budget, block_dims: BlockDims, trials: int,
                      prefix: str, projected: bool, numbered: bool) -> list[DimsCandidate]:
    """``trials`` schemes of per-block dimensions scaled to the budget's kept entries — for a byte budget, to the
    most whose artifact fits its bytes at its precision (projections included)."""
    s, m = config.search, features.num_features
    block_of = block_index(m, s.L, s.block_boundaries)
    key = budget.kept if budget.bytes is None else budget.bytes
    out = []
    for trial in range(trials):
        def scheme(kept: int) -> np.ndarray:
            return block_dims(config, features, block_of, kept, trial, key)
        kept = budget.kept
        if budget.bytes is not None:
            size = scheme_size(config, projected, budget)
            kept = largest_within(lambda n: size(scheme(n)[block_of]), budget.bytes, m * s.K)
        out.append(candidate(f"{prefix}{trial if numbered else ''}-{budget.tag}", scheme(kept), block_of))
    return out


def random_dims(config: Config, features: FeatureSpace, block_of: np.ndarray, kept: int, trial: int,
                key: int) -> np.ndarray:
    s = config.search
    return random_block_dims(block_of, s.L, s.K, kept, np.random.default_rng([config.train.seed, trial, key]))


def mde_dims(config: Config, features: FeatureSpace, block_of: np.ndarray, kept: int, trial: int,
             key: int) -> np.ndarray:
    s = config.search
    return mde_block_dims(features.frequencies, block_of, s.L, s.K, kept, s.mde_temperature)


def random_candidates(config: Config, features: FeatureSpace, budget: Budget) -> list[DimsCandidate]:
    return scaled_candidates(config, features, budget, random_dims, config.search.random_trials, "random", False,
                             numbered=True)


def mde_candidates(config: Config, features: FeatureSpace, budget: Budget) -> list[DimsCandidate]:
    return scaled_candidates(config, features, budget, mde_dims, 1, "mde", True, numbered=False)


def scheme_size(config: Config, projected: bool, budget: Budget) -> Callable[[np.ndarray], int]:
    """A fixed scheme's artifact embedding bytes (from every feature's dims) at ``budget``'s precision, per-block
    projections included where the family has them."""
    s = config.search
    return lambda feature_dims: scheme_bytes(feature_dims, s.K, budget.precision, budget.block_starts,
                                             s.L if projected else 0, budget.int_scales)


def scheme_fits(config: Config, family: Schemes, cand: DimsCandidate, budget: Budget) -> bool:
    """Whether a trained scheme meets ``budget``: its kept entries, or its artifact's bytes at the precision."""
    if budget.bytes is None:
        return cand.kept <= budget.kept
    return scheme_size(config, family.projected, budget)(cand.feature_dims) <= budget.bytes


def run_fixed_dims(config: Config, executor: StageExecutor, initial: dict, log: Log,
                   searched: Optional[tuple[FitResult, dict]], parallel: int,
                   family: Schemes) -> list[tuple[dict, StageResult]]:
    """grid / random / mde: train every candidate scheme from the initial state with its mask (a ``retrain``
    stage each, side by side), then per budget keep the best by validation loss. Selection time (the candidates
    not kept) is reported as the search."""
    weight = initial[EMBEDDING]
    # a byte budget's candidates at each precision (the per-block ones follow searched dims: not for fixed schemes)
    todo = [b for b in run_budgets(config, weight) if b.precision not in MIXED_CANDIDATES]
    features = executor.prepared.features
    per_budget = {b.name: family.candidates(config, features, b) for b in todo}
    unique = {c.name: c for cands in per_budget.values() for c in cands}

    def train(cand: DimsCandidate) -> tuple[FitResult, dict]:
        return train_stage(executor, config, "retrain", packed_state(initial, first_dims_mask(cand.feature_dims,
                                                                                       weight.shape[1])), log,
                           cand.name)

    names = list(unique)
    trained = dict(zip(names, side_by_side(lambda n: train(unique[n]), names, parallel)))
    out = []
    for budget in todo:
        cands = per_budget[budget.name]
        fitting = [c for c in cands if scheme_fits(config, family, c, budget)]
        fits = {c.name for c in fitting}
        if not fitting:
            fitting = [min(cands, key=lambda c: c.kept)]
            log(f"[{config.search.method}] {budget.name}: no scheme fits the budget (every block keeps at least one "
                f"dimension); the smallest, {fitting[0].name}, stands for it")
        best = min(fitting, key=lambda c: validation_loss(config.task, trained[c.name][0].best_valid))
        if budget.bytes is not None:  # the byte budget as met: the chosen scheme's entries
            budget = replace(budget, kept=best.kept, cr=weight.numel() / best.kept)
        result, state = trained[best.name]
        rows = [{"name": c.name, "block_dims": list(c.block_dims), "kept": c.kept,
                 "valid_loss": validation_loss(config.task, trained[c.name][0].best_valid),
                 "seconds": trained[c.name][0].seconds, "within_budget": c.name in fits,
                 "chosen": c is best} for c in cands]
        selection = sum(trained[c.name][0].seconds for c in cands if c is not best)
        timings = {"search": selection, "prune": 0.0, "retrain": result.seconds}
        states = {c.name: trained[c.name][1] for c in cands} if family.every_candidate_a_point else None
        out.append((state, StageResult(None, {"retrain": result}, timings, budget, None, candidates=rows,
                                       block_dims=best.block_dims, candidate_states=states)))
    return out


GRID = Method("grid", partial(run_fixed_dims, family=Schemes(grid_candidates, every_candidate_a_point=True)),
              byte_budgets=True)
RANDOM = Method("random", partial(run_fixed_dims, family=Schemes(random_candidates)), blocked=True, byte_budgets=True)
MDE = Method("mde", partial(run_fixed_dims, family=Schemes(mde_candidates, projected=True)), blocked=True,
             byte_budgets=True, retrain_projection="block")
