"""Failure recovery: a worker SIGKILLed mid-search resumes from the last checkpoint and the workflow writes its
report; re-running with the same ray.storage_path and run.name hands the finished stages back instead of
training again."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from autosrh_ray import workflow
from autosrh_ray.distributed import checkpoint as ckpt
from autosrh_ray.distributed.loops import FaultSpec, InMemoryData
from autosrh_ray.distributed.stages import LoopOptions

from .helpers import prepared_small, small_config

OVERRIDES = ["ray.num_workers=2", "ray.max_failures=1", "run.name=killed", "search.max_epochs=2",
             "train.max_epochs=2", "report.reference=none"]


def _latest_state(storage: Path, run: str) -> ckpt.LoopState:
    checkpoints = sorted(p for p in (storage / run).glob("checkpoint_*") if p.is_dir())
    assert checkpoints, f"no checkpoint under {storage / run}"
    return ckpt.read_state(checkpoints[-1])


def _distributed_run(config, prepared, output: Path, options: LoopOptions) -> dict:
    """workflow.run (its stages on Ray Train, as ``autosrh-ray run`` uses them) with the test's loop hooks."""
    return workflow.run(config, output, prepared=prepared, loop_options=options)


@pytest.fixture(scope="module")
def killed_run(ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("recovery")
    config, prepared = prepared_small(base / "data")
    config = small_config(*OVERRIDES, f"ray.storage_path={base / 'ray'}")
    memory = InMemoryData(prepared.load_split("train"), prepared.load_split("valid"))
    marker = base / "killed.txt"
    options = LoopOptions(memory=memory, fault=FaultSpec(str(marker), rank=1, epoch=1, step=2))
    report = _distributed_run(config, prepared, base / "out", options)
    first = _latest_state(base / "ray", "killed-search")
    written = json.loads((base / "out" / "report.json").read_text())
    start = time.perf_counter()
    rerun = _distributed_run(config, prepared, base / "out", options)
    rerun_seconds = time.perf_counter() - start
    steps = len(memory.train) // config.train.batch_size
    return dict(base=base, marker=marker, report=report, written=written, first=first, rerun=rerun, steps=steps,
                rerun_seconds=rerun_seconds, second=_latest_state(base / "ray", "killed-search"))


def test_killed_worker_resumes_from_the_checkpoint_and_the_report_is_written(killed_run):
    assert killed_run["marker"].exists()  # the fault fired: rank 1 was SIGKILLed at epoch 1, step 2
    s, state = killed_run["steps"], killed_run["first"]
    assert state.resumes == [s]  # restarted at the end-of-epoch-0 checkpoint's step, not from scratch
    assert state.step == 2 * s and state.epoch == 2  # no step done twice, none lost
    assert [h["rows"] for h in state.history] == [h["rows"] for h in state.history[:1]] * 2
    report = killed_run["written"]
    assert report == killed_run["report"] and report["epochs"]["search"] == 2
    assert 0.0 < report["valid"]["auc"] < 1.0


def test_rerun_with_same_storage_and_name_reuses_the_finished_stages(killed_run):
    state = killed_run["second"]
    s = killed_run["steps"]
    assert state.resumes == [s]  # no Train run was started again: the last checkpoint is the first run's
    assert state.step == 2 * s and len(state.history) == 2
    first, rerun = killed_run["report"], killed_run["rerun"]
    assert rerun["valid"] == first["valid"] and rerun["test"] == first["test"]
    assert rerun["stages"] == first["stages"]
