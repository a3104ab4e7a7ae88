"""Defaults that depend on the data's size: a long pass over train is evaluated several times, and a large
embedding table trains with sparse gradients (SparseAdam) unless the config says otherwise."""
from __future__ import annotations

import pytest

from autosrh_ray import config as config_module
from autosrh_ray.config import evaluation_steps, load_config, sized_for_data, sparse_embedding
from autosrh_ray.methods.model import build_model

from .distributed.helpers import prepared_small


def test_a_short_pass_is_one_evaluation_a_long_one_four_and_a_set_value_wins():
    config = load_config(None, ["train.batch_size=4096"])
    assert evaluation_steps(config, 96_000) == 0  # 24 steps: one evaluation per pass
    criteo = 36_000_000  # Criteo Kaggle's training rows: 8,790 steps per pass
    assert evaluation_steps(config, criteo) == 2198 and 4 * 2198 >= -(-criteo // 4096) > 3 * 2198
    assert evaluation_steps(load_config(None, ["train.eval_every_steps=100"]), criteo) == 100
    sized, notes = sized_for_data(config, criteo, 1000)
    assert sized.train.eval_every_steps == 2198 and any("train.eval_every_steps" in n for n in notes)
    assert sized_for_data(config, 96_000, 1000) == (config, [])


def test_auto_picks_sparse_adam_for_large_tables_only():
    auto = load_config(None, ["search.K=16"])
    assert auto.train.embedding_optimizer == "auto"
    assert not sparse_embedding(auto, 100_000)  # 1.6M entries: dense Adam is as fast
    assert sparse_embedding(auto, 1_000_000)  # 16M entries: the dense optimiser touches all of them every step
    assert not sparse_embedding(load_config(None, ["search.K=16", "search.order=second",
                                                   "search.hvp=double_backward"]), 1_000_000)
    assert sparse_embedding(load_config(None, ["train.embedding_optimizer=sparse_adam"]), 10)
    assert not sparse_embedding(load_config(None, ["train.embedding_optimizer=adam"]), 10_000_000)


@pytest.mark.parametrize("threshold, sparse", [(1, True), (1 << 40, False)])
def test_the_model_follows_the_choice(tmp_path, monkeypatch, threshold, sparse):
    config, prepared = prepared_small(tmp_path)
    monkeypatch.setattr(config_module, "SPARSE_FROM_ENTRIES", threshold)
    model = build_model(config, prepared.features, prepared.label_mean)
    assert model.embedding.embedding.sparse is sparse
