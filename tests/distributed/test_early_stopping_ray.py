"""Early stopping in the Ray Train loop: a scripted validation-loss sequence (test hook ``rewrite_metrics``)
decides the stop evaluation and reason, and the stage hands back the state of its best evaluation — checked
against a second, shorter run that ends exactly there (ordered in-memory data: runs are deterministic)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from autosrh_ray.distributed.loops import InMemoryData
from autosrh_ray.distributed.stages import LoopOptions, make_runner
from autosrh_ray.engine.training import StopRule

from .helpers import initial_state, prepared_small, small_config

LOSSES = (0.9, 0.7, 0.6, 0.65, 0.61, 0.62, 0.5, 0.4)  # best at 2, then worse twice: patience 2 stops after 5


@dataclass(frozen=True)
class ScriptedLoss:
    losses: tuple

    def __call__(self, evaluation: int, metrics: dict) -> dict:
        return {**metrics, "logloss": self.losses[evaluation]}


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("early")
    config, prepared = prepared_small(base / "data")
    memory = InMemoryData(prepared.load_split("train"), prepared.load_split("valid"))
    init = initial_state(config, prepared)
    out = {}
    for name, rule in (("stopped", StopRule(max_epochs=len(LOSSES), patience=2)),
                       ("reference", StopRule(max_epochs=3, patience=len(LOSSES)))):
        cfg = small_config(f"run.name=early-{name}", f"ray.storage_path={base / 'ray'}")
        runner = make_runner(cfg, prepared, options=LoopOptions(memory=memory, rewrite_metrics=ScriptedLoss(LOSSES)),
                             log=lambda _: None)
        out[name] = runner.train("search", init, rule)
    return out


@pytest.mark.slow
def test_patience_stops_the_search_and_its_best_state_is_handed_back(runs):
    result, state = runs["stopped"]
    assert (result.epochs, result.stop_reason, result.best_epoch) == (5, "patience", 2)
    assert result.best_valid["logloss"] == LOSSES[2]
    reference, at_best = runs["reference"]  # the same search stopped by its cap right after evaluation 2
    assert (reference.epochs, reference.stop_reason) == (3, "max_epochs")
    assert state.keys() == at_best.keys()
    for key in state:
        assert torch.equal(state[key], at_best[key]), key
    assert result.steps == 5 * reference.steps // 3  # it did train past the best evaluation
