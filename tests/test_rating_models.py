"""The regression path end to end on real MovieLens rows: Ray Data prepare, then MF / NeuMF search, prune and
retrain in-process; each beats predicting the training mean rating by 10% in MSE, at CR = 4."""
import numpy as np
import pytest

from autosrh_ray.config import load_config
from autosrh_ray.data.prepare import prepare
from autosrh_ray.engine.batch import iterate_batches
from autosrh_ray.engine.training import evaluate
from autosrh_ray.methods.in_process import run_all_in_process

from .conftest import shared_sample


@pytest.fixture(scope="module")
def movielens(ray_cluster, tmp_path_factory):
    path = shared_sample("movielens/ratings.csv")
    overrides = ["dataset.name=movielens", f"dataset.path={path}", "search.K=8", "search.L=4", "prune.cr=4",
                 "train.batch_size=1024", "train.lr=0.003", "train.max_epochs=6", "train.patience=1", "search.max_epochs=20",
                 "model.hidden=[32]"]
    prepared = prepare(load_config(overrides=[*overrides, "model.name=mf"]), tmp_path_factory.mktemp("ml"))
    return overrides, prepared


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mf", "neumf"])
def test_rating_model_beats_the_mean_rating(movielens, model):
    overrides, prepared = movielens
    config = load_config(overrides=[*overrides, f"model.name={model}"])
    assert config.task == "regression"
    train, valid, test = (prepared.load_split(s) for s in ("train", "valid", "test"))
    stages = run_all_in_process(config, prepared, train, valid, log=lambda _: None)[0]
    mse = evaluate(stages.model, iterate_batches(test, 4096), "regression")["mse"]
    baseline = float(np.mean((test.labels - train.labels.mean()) ** 2))
    assert mse < 0.9 * baseline, (mse, baseline)
    assert stages.model.embedding.kept_count() == int(prepared.num_features * 8 / 4 + 0.5)
