"""A user's dimension method, registered by its import path: every feature keeps its first d dimensions, d the
budget's entries per feature, trained from the initial state (no search). One module, one ``Method``."""
from __future__ import annotations

import numpy as np

from autosrh_ray.engine.mixed_dims import first_dims_mask
from autosrh_ray.engine.packed import packed_state
from autosrh_ray.methods.graph import EMBEDDING, StageResult, run_budgets, train_stage
from autosrh_ray.methods.registry import Method


def run_first_dims(config, executor, initial, log, searched, parallel):
    weight = initial[EMBEDDING]
    m, k = weight.shape
    out = []
    for budget in run_budgets(config, weight):
        d = max(1, min(k, budget.kept // m))
        state = packed_state(initial, first_dims_mask(np.full(m, d), k))
        result, state = train_stage(executor, config, "retrain", state, log, budget.tag)
        log(f"[first-dims] {budget.name}: {d} dimensions per feature")
        timings = {"search": 0.0, "prune": 0.0, "retrain": result.seconds}
        out.append((state, StageResult(None, {"retrain": result}, timings, budget)))
    return out


FIRST_DIMS = Method("first-dims", run_first_dims)
