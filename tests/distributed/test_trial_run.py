"""A study trial's single Train run (search → pruning → brief retrain, one worker-group start-up) computes what
the workflow's separate stages compute — search run, pruning task, retrain run — even when a worker is killed
during its retrain phase and Ray Train restarts it from the phase's checkpoint."""
from __future__ import annotations

import pytest
import torch

from autosrh_ray.distributed.loops import FaultSpec, InMemoryData
from autosrh_ray.distributed.stages import LoopOptions, make_runner
from autosrh_ray.engine.training import StopRule

from .helpers import initial_state, prepared_small, small_config

OVERRIDES = ["ray.num_workers=2", "ray.max_failures=1", "search.max_epochs=2", "search.patience=2"]


def _same_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_one_run_trial_equals_separate_stages_and_resumes_in_its_retrain_phase(ray_cluster, tmp_path):
    _, prepared = prepared_small(tmp_path / "data", *OVERRIDES)
    config = small_config(*OVERRIDES)
    memory = InMemoryData(prepared.load_split("train"), prepared.load_split("valid"))
    keep = prepared.num_features * config.search.K // 4
    search_rule, retrain_rule = StopRule.for_stage(config, "search"), StopRule(2, 2, 0)
    start = initial_state(config, prepared)

    def runner(name: str, options: LoopOptions):
        return make_runner(config, prepared, options=options, log=lambda _: None, storage=str(tmp_path / "ray"),
                           name=name)

    separate = runner("separate", LoopOptions(memory=memory, dtype="float64"))
    search, searched = separate.train("search", start, search_rule)
    retrain, retrained = separate.train("retrain", separate.prune(searched, keep), retrain_rule, tag="t")

    marker = tmp_path / "killed.txt"
    fault = FaultSpec(str(marker), rank=1, epoch=1, step=1, phase=1)  # during the retrain, after one checkpoint
    one = runner("one", LoopOptions(memory=memory, dtype="float64", fault=fault))
    (search_1, searched_1), (retrain_1, retrained_1) = one.search_then_retrain(start, search_rule, keep,
                                                                              retrain_rule, "t")
    assert marker.exists()  # the fault fired in the retrain phase and the run recovered
    assert (search_1.epochs, retrain_1.epochs) == (search.epochs, retrain.epochs) == (2, 2)
    for mine, theirs in zip(search_1.history + retrain_1.history, search.history + retrain.history):
        assert abs(mine["logloss"] - theirs["logloss"]) < 1e-12
    _same_states(searched_1, searched)
    _same_states(retrained_1, retrained)
    assert retrained_1["embedding.dims"].numel() == keep

    # Saved as the separate stages are: a re-run hands both back without starting Ray Train.
    lines: list[str] = []
    again = make_runner(config, prepared, options=LoopOptions(memory=memory, dtype="float64"), log=lines.append,
                        storage=str(tmp_path / "ray"), name="one")
    (search_2, _), (retrain_2, _) = again.search_then_retrain(start, search_rule, keep, retrain_rule, "t")
    assert search_2.history == search_1.history and retrain_2.history == retrain_1.history
    assert sum("reused" in line for line in lines) == 2
