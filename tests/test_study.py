"""A Ray Tune study inside the workflow (tiny synthetic data, 4 trials, ASHA): the scheduler stops a trial, the
best finished trial is chosen, TensorBoard has the reported metric, every trial is pruned to the same absolute
budget whatever its K, and the final models keep exactly their budgets."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from autosrh_ray import workflow
from autosrh_ray.config import load_config
from autosrh_ray.engine.prune import kept_count
from autosrh_ray.study import trial_key

from .distributed.helpers import SMALL
from .ray_head import live_placement_groups

pytestmark = pytest.mark.slow  # Ray Tune studies end to end (minutes)

PARAMS = 600  # the study budget: every trial keeps exactly this many entries
# Trials run one at a time on 2 CPUs, in Tune's grid order (keys sorted, the first varying fastest): (K4, 0.01),
# (K8, 0.01), (K4, 1e-5), (K8, 1e-5). The last two are far worse at ASHA's first rung than those before them, so
# the scheduler stops them.
STUDY = [*SMALL, "model.name=fm", "train.lr=0.01", "train.patience=2", "search.patience=2", "search.max_epochs=6",
         "tune.enabled=true", "tune.search_space={search.K: [4, 8], train.lr: [0.01, 0.00001]}",
         "tune.scheduler=asha", "tune.grace_period=1", "tune.reduction_factor=2", "tune.retrain_epochs=2",
         "prune.cr=[20]", f"prune.params={PARAMS}", "report.reference=none"]


def tensorboard_scalars(directory: Path) -> dict[str, list[float]]:
    """Scalars in the TFRecord event files under ``directory`` (length, crc, Event proto, crc per record)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[float]] = {}
    for path in directory.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(value.simple_value)
    return out


@pytest.fixture(scope="module")
def study_run(ray_cluster, other_ray, tmp_path_factory):
    # beside another Ray instance (other_ray): the study that hung when Ray's placement-group cleaner found two
    out = tmp_path_factory.mktemp("study")
    config = load_config(None, [*STUDY, "ray.stall_timeout_s=240"])
    report = workflow.run(config, out, log=lambda _: None)
    return out, config, report


def test_the_scheduler_stops_a_trial_and_the_best_finished_trial_is_chosen(study_run):
    _, _, report = study_run
    trials = report["study"]["trials"]
    assert len(trials) == 4
    assert any(t["stop_reason"] == "scheduler" and t["score"] is None for t in trials), trials
    finished = [t for t in trials if t["score"] is not None]
    assert finished and all(t["stop_reason"] in ("patience", "max_epochs") for t in finished)
    best = report["study"]["best"]
    assert best["score"] == min(t["score"] for t in finished)  # valid_logloss: lower is better
    assert report["K"] == best["config"]["search.K"]  # the workflow finished from the best trial's config


def test_the_study_beside_another_ray_gave_every_cpu_back(study_run, ray_cluster):
    _, _, report = study_run
    assert all(t["stop_reason"] != "stalled" for t in report["study"]["trials"])
    assert not live_placement_groups(ray_cluster)  # every Train run's placement group is gone


def test_tensorboard_has_the_reported_metric_for_the_chosen_trial(study_run):
    out, _, report = study_run
    scalars = tensorboard_scalars(Path(report["study"]["directory"]))
    tags = [t for t in scalars if t.endswith("valid_logloss")]
    assert tags and any(len(scalars[t]) > 1 for t in tags)
    assert Path(report["study"]["directory"]).is_relative_to(out)  # under the run's output directory


def test_final_models_keep_exactly_their_budgets(study_run):
    out, _, report = study_run
    m, k = report["num_features"], report["K"]
    expected = {"cr20": kept_count(m, k, 20), f"params{PARAMS}": PARAMS}
    assert {e["budget"]: e["params"]["kept"] for e in report["models"]} == expected
    for entry in report["models"]:
        dims = pq.read_table(out / entry["artifacts"]["dims"])
        assert sum(dims.column("kept_dims").to_pylist()) == entry["params"]["kept"]
    assert json.loads((out / "report.json").read_text())["models"] == report["models"]
    for name in ("report.md", "alpha.png", "kept_dims.png", "quality.png", "study.png"):
        assert (out / name).stat().st_size > 0, name


def _finished_trials(study_dir: Path) -> int:
    """Trials whose retrain saved its ``stage.pt`` (a trial writes it when its last stage ends, before Tune logs
    the trial's final result, so this cannot lag behind the trials themselves)."""
    return len(list(study_dir.parent.glob(f"{study_dir.name}-t*-retrain-*/stage.pt")))


def test_a_killed_study_resumes_without_running_finished_trials_again(ray_cluster, tmp_path):
    """SIGKILL the workflow's driver (its whole process group) once a trial has finished, run it again: that
    trial's Train runs are not touched, the other finishes, and the report is complete."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    out = tmp_path / "out"
    overrides = [o for o in STUDY if not o.startswith(("tune.search_space", "tune.scheduler"))]
    # one final budget, the study's own: what comes after the study is not what this test is about
    overrides = [o for o in overrides if not o.startswith("prune.cr")]
    # trials in their Tune actors (ray.num_workers: 0): what is resumed here is Tune's study, the same for trials
    # on Ray Train (the module study above runs those; test_trial_run.py resumes one inside its Train run)
    overrides += ["tune.search_space={search.K: [4, 8]}", "tune.scheduler=fifo", "prune.cr=[]", "ray.num_workers=0"]
    config_file = tmp_path / "study.yaml"
    config_file.write_text(yaml.safe_dump({}))
    command = [sys.executable, "-m", "autosrh_ray", "run", str(config_file), "--output", str(out),
               *[arg for o in overrides for arg in ("--set", o)]]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 600
    studies = []
    while time.time() < deadline and proc.poll() is None:
        # the study's own directory (its trials' Train runs sit beside it as <study>-t<key>-<run>)
        studies = [d for d in (out / "ray_results").glob("study-*") if re.fullmatch(r"study-[0-9a-f]+", d.name)]
        if studies and _finished_trials(studies[0]) >= 1:
            break
        time.sleep(1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    study = studies[0]
    done_before = {p: p.stat().st_mtime_ns for p in (out / "ray_results").glob(f"{study.name}-t*/stage.pt")}
    assert len(done_before) >= 2  # the finished trial's stages (search and retrain)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was written again"
    report = json.loads((out / "report.json").read_text())
    trials = report["study"]["trials"]
    assert len(trials) == 2 and all(t["score"] is not None for t in trials)
    assert report["models"] and report["test"]["auc"] > 0.5

    # Trials compete at equal size: every K kept exactly the study budget (counted from each trial's kept entries).
    for t in trials:
        _, state = torch.load(out / "ray_results" / f"{study.name}-t{trial_key(t['config'])}-retrain-study" /
                              "stage.pt", weights_only=False)
        assert (state["embedding.alpha"].shape[1], state["embedding.dims"].numel()) == (t["config"]["search.K"],
                                                                                       PARAMS)


def test_an_in_process_study_reports_every_evaluation_and_finishes_from_the_best_trials_search(ray_cluster,
                                                                                                 tmp_path):
    """``ray.num_workers: 0``: each trial runs the engine's loops in its own Tune actor (no Train run), reports
    every evaluation to Tune, saves its stages as a Train trial does; the final model starts from the best
    trial's searched α."""
    import numpy as np

    from autosrh_ray.distributed.stages import load_stage

    # with the default UE reference (the other tests leave it out): a plain run after the study, not a study
    config = load_config(None, [*[o for o in STUDY if o != "report.reference=none"], "ray.num_workers=0"])
    lines: list[str] = []
    report = workflow.run(config, tmp_path, log=lines.append)
    assert not [line for line in lines if line.startswith("[search]")]  # not searched again after the study
    study = report["study"]
    trials, best = study["trials"], study["best"]
    assert len(trials) == 4
    finished = [t for t in trials if t["score"] is not None]
    assert finished and best["score"] == min(t["score"] for t in finished)
    assert report["K"] == best["config"]["search.K"]

    directory = Path(study["directory"])
    runs = directory.parent / f"{directory.name}-t{trial_key(best['config'])}-search"
    assert [p.name for p in runs.iterdir()] == ["stage.pt"]  # saved as a Train trial saves it; no Train run
    searched, state = load_stage(str(runs / "stage.pt"))
    assert report["stages"]["search"]["epochs"] == searched.epochs == best["epochs"]
    assert np.array_equal(np.load(tmp_path / report["artifacts"]["alpha"]), state["embedding.alpha"].numpy())

    scalars = tensorboard_scalars(directory)
    losses = [v for t, v in scalars.items() if t.endswith("valid_logloss")]
    assert losses and max(len(v) for v in losses) > 2  # every evaluation, not only the trial's score
    m, k = report["num_features"], report["K"]
    expected = {"cr20": kept_count(m, k, 20), f"params{PARAMS}": PARAMS}
    assert {e["budget"]: e["params"]["kept"] for e in report["models"]} == expected
    assert report["reference"]["method"] == "uniform" and report["reference"]["test"]["auc"] > 0.5
