"""Data-parallel bi-level search on Ray Train: 1 worker vs 2 workers (same global batch, float64, ordered
in-memory data), α bitwise identical on every rank after every step, validation AUC over the whole split.

Tolerance. With equal local batches the global mean loss is the mean of the per-rank means, so the averaged
gradients differ from the 1-worker gradients only by float64 rounding (~1e-16 relative per operation). Adam
turns a gradient g into ≈ m/√v, which is scale-free, and Eq. 14 divides each α row by its mean |g|: both keep
relative errors at the level of the inputs' except for entries whose gradient is itself at rounding level (≈0),
where the sign could flip. Over ≤ 20 steps the rounding grows by Adam's (a few ×) amplification per step,
so we require max |Δ| ≤ 1e-12 (absolute, on α ∈ [0, 1] and Θ entries of size ~1e-2..1; measured here: 1e-16 first
order, 2e-16 second order after 18 steps); a flipped sign would show up as a ~lr = 1e-2 jump on α or 1e-3 on
Θ, ten orders of magnitude above it. The measured difference is printed (``pytest -s``).

Second order runs 2 workers against the in-process engine (world size 1): the 1-worker Train run is shown
equal to the engine for first order, and each TorchTrainer start costs ~20 s on 2 cores.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autosrh_ray.distributed.loops import InMemoryData
from autosrh_ray.distributed.sources import InMemorySource
from autosrh_ray.distributed.stages import LoopOptions, make_runner
from autosrh_ray.engine.metrics import auc, task_metrics
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import StopRule, predict

from .helpers import class_per_rank, initial_state, model_from_state, prepared_small, small_config

pytestmark = pytest.mark.slow

TOL = 1e-12
MAX_STEPS = 20


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """Search states: first order on 1 and 2 workers, second order on 2 workers."""
    base = tmp_path_factory.mktemp("equiv")
    config, prepared = prepared_small(base / "data")
    train = prepared.load_split("train")
    valid = class_per_rank(prepared.load_split("valid"))
    assert len(train) // config.train.batch_size <= MAX_STEPS
    init = initial_state(config, prepared)
    out = {"config": config, "prepared": prepared, "train": train, "valid": valid, "init": init}
    for order, workers in (("first", 1), ("first", 2), ("second", 2)):
        cfg = small_config(f"search.order={order}", f"ray.num_workers={workers}",
                           f"run.name=equiv-{order}-{workers}", f"ray.storage_path={base / 'ray'}")
        options = LoopOptions(memory=InMemoryData(train, valid), dtype="float64", check_replicas=True)
        runner = make_runner(cfg, prepared, options=options)
        out[order, workers] = runner.run("search", "search", init, StopRule(max_epochs=1, patience=1))
    return out


def _reference(runs, order: str) -> dict:
    """The engine's BiLevelSearch in this process, same batches (world size 1), float64."""
    config, prepared = runs["config"], runs["prepared"]
    model = model_from_state(config, prepared, runs["init"])
    search = BiLevelSearch(model, config.task, lr=config.train.lr, lr_alpha=config.search.lr_alpha, order=order,
                           xi=config.xi)
    source = InMemorySource(runs["train"], runs["valid"], config.train.batch_size, 0, 1)
    stream = source.valid_stream()
    for batch in source.train_epoch(0):
        search.step(batch.to("cpu", torch.float64), next(stream).to("cpu", torch.float64))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _OneWorker:
    """The in-process engine's result in the shape of a 1-worker LoopState (model, step)."""

    def __init__(self, model: dict, step: int):
        self.model, self.step = model, step


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("order", ["first", "second"])
def test_one_and_two_workers_give_the_same_alpha_and_theta(runs, order):
    two = runs[order, 2]
    one = runs[order, 1] if (order, 1) in runs else _OneWorker(_reference(runs, order), two.step)
    assert one.step == two.step == len(runs["train"]) // runs["config"].train.batch_size
    diff = _max_diff(one.model, two.model)
    alpha_diff = float((one.model["embedding.alpha"] - two.model["embedding.alpha"]).abs().max())
    print(f"{order} order, {one.step} steps: max |Θ,α (1 worker) − (2 workers)| = {diff:.3e}, α: {alpha_diff:.3e}")
    assert diff <= TOL
    # the search really moved α and Θ (the comparison is not between two untouched initial states)
    assert float((one.model["embedding.alpha"] - 1).abs().max()) > 1e-3
    assert _max_diff(one.model, runs["init"]) > 1e-3


def test_one_worker_matches_the_in_process_engine(runs):
    assert _max_diff(runs["first", 1].model, _reference(runs, "first")) == 0.0  # same process layout: bitwise


@pytest.mark.parametrize("order", ["first", "second"])
def test_alpha_identical_on_every_rank_after_every_step(runs, order):
    history = runs[order, 2].history
    assert history and all(h["replica_alpha_max_diff"] == 0.0 for h in history)  # gathered after every step
    assert all(h["replica_theta_max_diff"] == 0.0 for h in history)  # Θ gathered at the end of each epoch


def test_validation_auc_is_over_the_whole_split_not_a_mean_of_ranks(runs):
    config, prepared, valid = runs["config"], runs["prepared"], runs["valid"]
    state = runs["first", 2]
    reported = state.history[-1]
    model = model_from_state(config, prepared, state.model)
    source = InMemorySource(runs["train"], valid, config.train.batch_size, 0, 1)
    outputs, labels = predict(model, (b.to("cpu", torch.float64) for b in source.eval_batches()))
    whole = task_metrics("classification", labels, outputs)
    assert reported["rows"] == len(valid)
    assert reported["auc"] == pytest.approx(whole["auc"], abs=1e-12)
    assert reported["logloss"] == pytest.approx(whole["logloss"], rel=1e-9)
    # each rank holds one class only: per-rank AUCs are undefined, so a mean of them could not give this number
    per_rank = [auc(labels[r::2], outputs[r::2]) for r in range(2)]
    assert all(math.isnan(a) for a in per_rank) and 0.0 < reported["auc"] < 1.0
    assert not np.isnan(reported["auc"])
