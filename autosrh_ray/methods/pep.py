"""PEP (Liu et al., ICLR 2021): learnable soft thresholds prune the embedding during training until the kept
entries reach each budget; the mask is kept by margin and retrained from the initial values."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

import torch

from ..artifact.budget import Budget
from ..config import Config
from ..engine.features import FeatureSpace, block_index
from ..engine.pep import ThresholdEmbedding
from ..engine.training import FitResult, StopRule
from ..logs import Log
from .graph import (EMBEDDING, StageExecutor, StageResult, quantised_for, resolved_budgets, rewound, run_budgets,
                    side_by_side, train_stage)
from .registry import Method


def run_pep(config: Config, executor: StageExecutor, initial: dict, log: Log,
            searched: Optional[tuple[FitResult, dict]], parallel: int) -> list[tuple[dict, StageResult]]:
    """PEP, per budget: prune with learnable thresholds until the kept entries reach the budget (or patience),
    keep exactly the budget by margin, retrain from the initial values under that mask. A byte budget is one
    pruning run down to its largest candidate (the lowest precision keeps the most entries; estimated on the
    initial |E|), then each candidate keeps as many entries as fit its bytes by margin and is retrained."""
    weight = initial[EMBEDDING]
    runs: dict[str, list[Budget]] = {}
    for b in run_budgets(config, weight):
        runs.setdefault(b.group or b.name, []).append(b)

    def prune_then_retrain(members: list[Budget]) -> list[tuple[dict, StageResult]]:
        target = max(b.resolved(weight.abs()).kept for b in members)
        rule = replace(StopRule.for_stage(config, "pep"), kept_at_most=target)
        tag = members[0].group or members[0].tag
        pep, pruning = train_stage(executor, config, "pep", initial, log, tag, rule)
        start = time.perf_counter()
        members = resolved_budgets(config, executor, pruning, members)
        resolving = time.perf_counter() - start

        def finish(budget: Budget) -> tuple[dict, StageResult]:
            start = time.perf_counter()
            state = quantised_for(config, rewound(executor.prune(pruning, budget.kept), initial), budget)
            selection = resolving + time.perf_counter() - start
            retrain, state = train_stage(executor, config, "retrain", state, log, budget.tag)
            timings = {"search": pep.seconds, "prune": selection, "retrain": retrain.seconds}
            return state, StageResult(None, {"pep": pep, "retrain": retrain}, timings, budget)

        return side_by_side(finish, members, parallel if len(runs) == 1 else 1)

    return [r for rs in side_by_side(prune_then_retrain, list(runs.values()), parallel) for r in rs]


def threshold_embedding(config: Config, features: FeatureSpace, sparse: bool) -> ThresholdEmbedding:
    """PEP's pruning embedding: a learnable threshold per entry (its re-parameterisation, one per block)."""
    s = config.search
    block_of = torch.from_numpy(block_index(features.num_features, 1, None))
    return ThresholdEmbedding(block_of, s.K, s.pep_init_threshold, s.pep_l2, sparse, config.train.init_std)


PEP = Method("pep", run_pep, first_stage="pep", byte_budgets=True, search_embedding=threshold_embedding)
