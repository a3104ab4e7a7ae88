"""``autosrh-ray predict`` on raw Criteo rows: the test rows of a finished run, cut out of the raw file, score to the
run's own test metric (to 1e-6); unseen values map to the out-of-vocabulary rows; bad rows are counted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from autosrh_ray import workflow
from autosrh_ray.config import load_config
from autosrh_ray.data.split import SPLIT_NAMES, split_of
from autosrh_ray.engine.metrics import task_metrics

from .conftest import shared_sample
from .ray_head import live_placement_groups

ROOT = Path(__file__).resolve().parents[1]
TINY = ["search.max_epochs=3", "train.max_epochs=3", "search.K=8", "train.batch_size=512", "report.reference=none",
        "report.plots=false"]


@pytest.fixture(scope="module")
def criteo_run(ray_cluster, other_ray, tmp_path_factory):
    """A plain run on Ray Train beside another Ray instance (the suite's ``other_ray``): it must finish and give
    every CPU back (see test_beside_another_ray.py)."""
    base = tmp_path_factory.mktemp("predict")
    raw = shared_sample("criteo/dac_sample.txt")
    config = load_config(ROOT / "workflows" / "criteo.yaml",
                         [f"dataset.path={raw}", *TINY, "ray.stall_timeout_s=240"])
    report = workflow.run(config, base / "run", log=lambda _: None)
    assert not live_placement_groups(ray_cluster)  # every Train run's placement group is gone
    lines = raw.read_text().splitlines()
    split = split_of(np.arange(len(lines)), config.dataset.seed, config.dataset.split)
    test_lines = [line for line, s in zip(lines, split) if s == SPLIT_NAMES.index("test")]
    return base, report, test_lines


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autosrh_ray", "predict", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_predict_on_raw_test_rows_reproduces_the_runs_test_metric(criteo_run):
    base, report, test_lines = criteo_run
    (base / "test.txt").write_text("\n".join(test_lines) + "\n")
    done = _cli("--model", str(base / "run"), "--input", str(base / "test.txt"), "--output", str(base / "s.parquet"))
    assert done.returncode == 0, done.stderr[-2000:]
    scores = pq.read_table(base / "s.parquet")
    assert scores.num_rows == len(test_lines) == report["rows"]["test"]
    assert scores.column("position").to_pylist() == list(range(len(test_lines)))
    p = scores.column("score").to_numpy()
    metrics = task_metrics("classification", scores.column("label").to_numpy(), np.log(p / (1 - p)))
    for key in ("auc", "logloss"):
        assert abs(metrics[key] - report["test"][key]) < 1e-6, (key, metrics[key], report["test"][key])


def test_unseen_values_score_as_out_of_vocabulary_and_bad_rows_are_counted(criteo_run):
    base, _, test_lines = criteo_run
    rows = [line.split("\t") for line in test_lines[:20]]
    unseen = []
    for tag in ("never-seen-a", "never-seen-b"):
        for r in rows:  # every categorical value (C1..C26 are columns 14..39) replaced by a value never seen
            unseen.append("\t".join(r[:14] + [f"{tag}{i}" for i in range(26)]))
    unseen.append("not\ta\tcriteo\trow")  # a bad row: too few columns
    (base / "unseen.txt").write_text("\n".join(unseen) + "\n")
    fail = _cli("--model", str(base / "run"), "--input", str(base / "unseen.txt"), "--output", str(base / "u.csv"))
    assert fail.returncode == 2 and "unseen.txt:41" in fail.stderr and len(fail.stderr.strip().splitlines()) == 1
    config = base / "run" / "config.yaml"
    config.write_text(config.read_text().replace("on_bad_rows: error", "on_bad_rows: skip"))
    done = _cli("--model", str(base / "run"), "--input", str(base / "unseen.txt"), "--output", str(base / "u.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored 40 of 41 rows (skipped 1)" in done.stdout
    score = pacsv.read_csv(base / "u.csv").column("score").to_numpy()
    assert np.allclose(score[:20], score[20:], rtol=1e-6, atol=0)  # two different unseen values: the same OOV rows
    assert np.all((score > 0) & (score < 1))


def test_predict_names_what_is_missing(tmp_path):
    done = _cli("--model", str(tmp_path), "--input", "x.txt", "--output", str(tmp_path / "s.parquet"))
    assert done.returncode == 2 and done.stderr.startswith("autosrh-ray: error: --model") \
        and len(done.stderr.strip().splitlines()) == 1


def test_predict_on_ray_data_scores_shards_side_by_side_as_the_single_process_does(criteo_run, ray_cluster):
    from autosrh_ray.predict import predict, predict_on_ray

    base, _, test_lines = criteo_run
    shards = base / "shards"
    shards.mkdir()
    third = len(test_lines) // 3 + 1
    for i in range(3):
        (shards / f"part-{i}.txt").write_text("\n".join(test_lines[i * third:(i + 1) * third]) + "\n")
    one = predict(base / "run", str(shards), base / "one.parquet", log=lambda _: None)
    many = predict_on_ray(base / "run", str(shards), str(base / "parts"), log=lambda _: None)
    parts = sorted((base / "parts").glob("part-*.parquet"))
    assert len(parts) == 3  # one part per input chunk, scored as separate Ray Data tasks
    assert (many.read, many.scored, many.skipped) == (one.read, one.scored, one.skipped) == (len(test_lines),) * 2 + (0,)
    together = pq.read_table(parts).sort_by("position")
    single = pq.read_table(base / "one.parquet")
    assert together.column("position").to_pylist() == single.column("position").to_pylist()
    assert np.array_equal(together.column("score").to_numpy(), single.column("score").to_numpy())
