"""Every shipped workflow runs on data of its format by overriding only the path (and, to stay small here, the
training budgets): the real samples under ``../shared/data``, generated rows for KDD12 (its sample has 5 rows)
and for the tabular example. Prepare runs on Ray Data, the stage graph in-process (the Ray Train path is covered
by the quickstart tests)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from autosrh_ray.config import load_config
from autosrh_ray.data.prepare import prepare
from autosrh_ray.engine.batch import iterate_batches
from autosrh_ray.engine.training import evaluate
from autosrh_ray.methods.in_process import run_all_in_process

from .conftest import shared_sample

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
TINY = ["search.max_epochs=2", "train.max_epochs=2", "search.K=8", "train.batch_size=512", "model.hidden=[16]"]
SAMPLES = {"criteo": "criteo/dac_sample.txt", "avazu": "avazu/train_sample.csv", "movielens": "movielens/ratings.csv",
           "amazon": "amazon/ratings_Electronics_sample.csv"}


def _kdd12_rows(path: Path, rows: int = 6000) -> Path:
    """KDD12 training.txt rows (click, impression, 10 id columns), Zipf-distributed ids, click rate ~ 0.2."""
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        for _ in range(rows):
            ids = [str(int(v)) for v in rng.zipf(1.5, size=10) % 500]
            impressions = int(rng.integers(1, 4))
            clicks = int(rng.random() < 0.2 + 0.3 * (ids[1] == "1"))
            fh.write("\t".join([str(clicks), str(impressions), *ids]) + "\n")
    return path


def _table(path: Path, rows: int = 6000) -> Path:
    """A CSV with the tabular example's columns (and one it ignores); the label depends on user and category."""
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "category", "city", "price", "age", "clicked", "comment"])
        for _ in range(rows):
            user, category = int(rng.zipf(1.4) % 300), int(rng.integers(0, 12))
            p = 0.1 + 0.5 * (user % 3 == 0) * (category < 4)
            w.writerow([f"u{user}", f"i{int(rng.zipf(1.3) % 900)}", f"c{category}", rng.choice(["a", "b", "c"]),
                        f"{rng.gamma(2.0, 10.0):.2f}", int(rng.integers(18, 80)), int(rng.random() < p),
                        "free text, ignored"])
    return path


def _data(name: str, directory: Path) -> Path:
    if name == "kdd12":
        return _kdd12_rows(directory / "training.txt")
    if name == "tabular-example":
        return _table(directory / "table.csv")
    return shared_sample(SAMPLES[name])


@pytest.mark.parametrize("name", ["criteo", "avazu", "kdd12", "movielens", "amazon", "tabular-example"])
def test_workflow_runs_on_data_of_its_format(name, ray_cluster, tmp_path):
    overrides = [f"dataset.path={_data(name, tmp_path)}", *TINY]
    config = load_config(WORKFLOWS / f"{name}.yaml", overrides)
    prepared = prepare(config, tmp_path / "prepared")
    r = prepared.rows
    assert r.read == r.train + r.valid + r.test + r.skipped and r.train > 0 and r.test > 0
    train, valid, test = (prepared.load_split(s) for s in ("train", "valid", "test"))
    stages = run_all_in_process(config, prepared, train, valid, log=lambda _: None)[0]
    metrics = evaluate(stages.model, iterate_batches(test, 4096), config.task)
    kept = stages.model.embedding.kept_count()
    assert kept == int(prepared.num_features * config.search.K / config.prune.crs[0] + 0.5)
    if config.task == "classification":
        assert 0.5 < metrics["auc"] < 1.0, metrics
    else:
        assert np.isfinite(metrics["mse"]) and metrics["mse"] < float(np.var(test.labels)) * 1.5, metrics
