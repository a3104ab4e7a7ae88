"""AutoDim and AutoEmb. AutoDim: the search model mixes weight-sharing candidates as the paper describes (checked
against a direct per-candidate computation), its α is updated with plain gradients on validation batches, and the
graph picks one candidate dimension per field, then retrains that architecture from the initial embedding.
AutoEmb: the controller is the MLP on popularity it claims, each feature keeps its controller's choice (a function
of its popularity) and the compact artifact reproduces the retrained model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autosrh_ray.config import ConfigError, load_config, with_overrides
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.autodim import AutoDimEmbedding, candidate_dims
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.methods.in_process import run_all_in_process
from autosrh_ray.methods.model import build_model

from .helpers import random_batch


def test_candidates_are_the_papers_capped_at_k():
    assert candidate_dims(64) == [8, 16, 32, 48, 64]
    assert candidate_dims(16) == [8, 16]
    assert candidate_dims(4) == [4]


def test_the_mix_is_the_weighted_sum_of_projected_prefixes():
    torch.manual_seed(0)
    emb = AutoDimEmbedding(20, 3, 6, [2, 4, 6], init_std=0.5).double()
    with torch.no_grad():
        emb.projection.normal_()
        emb.alpha.normal_()
    emb.eval()  # softmax(α), no Gumbel noise
    ids = torch.tensor([[0, 5, 19], [3, 3, 7]])
    values = torch.tensor([[1.0, 0.5, 2.0], [1.0, 1.0, 0.5]], dtype=torch.float64)
    out = emb(ids, values)
    p = torch.softmax(emb.alpha, dim=1)
    for b in range(2):
        for f in range(3):
            e = emb.weight[ids[b, f]]
            expected = sum(p[f, n] * (e[:d] @ emb.projection[f, n, :d]) for n, d in enumerate([2, 4, 6]))
            assert torch.allclose(out[b, f], expected * values[b, f], atol=1e-12)
    emb.train()  # Gumbel noise: two forward passes differ, α gets a gradient through the mix
    assert not torch.allclose(emb(ids, values), emb(ids, values))
    emb(ids, values).sum().backward()
    assert emb.alpha.grad is not None and emb.alpha.grad.abs().sum() > 0


def test_alpha_takes_plain_adam_steps_on_the_validation_batch_without_clipping():
    config = load_config(overrides=["search.method=autodim", "model.name=fm", "search.K=8",
                                    "search.autodim_candidates=[2,4,8]", "search.lr_alpha=0.5"])

    class Shape:
        num_features, num_fields = 30, 3

    torch.manual_seed(0)
    model = build_model(config, Shape, 0.3).double()
    assert isinstance(model.embedding, AutoDimEmbedding)
    searcher = BiLevelSearch(model, "classification", lr=1e-3, lr_alpha=0.5)
    for step in range(30):
        searcher.step(random_batch(seed=step), random_batch(seed=100 + step))
    alpha = model.alpha.detach()
    assert alpha.abs().max() > 1.0  # logits: no [0, 1] clip as for AutoSrh's α


def test_one_candidate_dimension_per_field_then_a_retrain_of_that_architecture(tmp_path):
    config = load_config(overrides=["search.method=autodim", "model.name=fm", "search.K=16", "train.batch_size=1024",
                                    "dataset.synthetic.rows=30000", "search.autodim_candidates=[4,8,16]",
                                    "report.reference=none"])
    prepared = prepare_synthetic(config, tmp_path)
    train, valid = prepared.load_split("train"), prepared.load_split("valid")
    (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
    fields = prepared.features.num_fields
    dims = result.block_dims
    assert len(dims) == fields and set(dims) <= {4, 8, 16}  # one dimension per field, from the candidates
    emb = result.model.embedding
    kept = emb.kept_per_feature().numpy()
    assert np.array_equal(kept, np.asarray(dims)[prepared.features.field_of])  # a field's features: its d_f
    assert emb.projection.shape == (fields, 16, 16) and emb.alpha is None
    assert result.budget.kept == int(kept.sum()) and list(result.stages) == ["search", "retrain"]
    assert result.searched_alpha.shape == (fields, 3)
    assert result.retrain.stop_reason == "patience"


def test_autodim_searches_first_order_only():
    with pytest.raises(ConfigError, match="search.order"):
        with_overrides(load_config(), {"search.method": "autodim", "search.order": "second"})


def test_autoemb_controller_is_the_mlp_on_popularity_it_claims():
    from autosrh_ray.engine.autoemb import HIDDEN, controller_logits, controller_size

    torch.manual_seed(0)
    n = 3
    flat = torch.randn(controller_size(n), dtype=torch.float64)
    pop = torch.tensor([-1.0, 0.0, 2.5], dtype=torch.float64)
    w1, b1 = flat[:HIDDEN], flat[HIDDEN:2 * HIDDEN]
    w2, b2 = flat[2 * HIDDEN:2 * HIDDEN + HIDDEN * n].view(HIDDEN, n), flat[-n:]
    expected = torch.stack([torch.relu(x * w1 + b1) @ w2 + b2 for x in pop])
    assert torch.allclose(controller_logits(flat, pop, n), expected, atol=1e-12)


def test_autoemb_choice_follows_popularity_and_the_artifact_reproduces_the_model(tmp_path):
    from autosrh_ray.artifact.format import load_model, save_model
    from autosrh_ray.engine.autoemb import popularity_input, selected_candidates
    from autosrh_ray.engine.batch import iterate_batches

    config = load_config(overrides=["search.method=autoemb", "model.name=fm", "search.K=16", "train.batch_size=1024",
                                    "dataset.synthetic.rows=30000", "search.autoemb_candidates=[2,8,16]",
                                    "report.reference=none"])
    prepared = prepare_synthetic(config, tmp_path / "data")
    train, valid = prepared.load_split("train"), prepared.load_split("valid")
    (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
    emb = result.model.embedding
    kept = emb.kept_per_feature()
    pop = popularity_input(prepared.features.frequencies)
    chosen = selected_candidates(result.searched_alpha, pop, 3)
    assert torch.equal(kept, torch.tensor([2, 8, 16])[chosen])  # each feature: its controller's argmax candidate
    assert torch.equal(emb.block_of, chosen)  # one projection per chosen candidate
    freq = prepared.features.frequencies
    for f in np.unique(freq)[:50]:  # a function of popularity: equal frequencies, equal dimensions
        assert len(set(kept[torch.from_numpy(freq == f)].tolist())) == 1
    assert result.budget.kept == int(kept.sum())
    save_model(result.model, tmp_path / "m.pt", "fm", prepared.features.num_fields, {})
    loaded = load_model(tmp_path / "m.pt")
    batch = next(iter(iterate_batches(valid, 512)))
    with torch.no_grad():
        assert torch.allclose(loaded(batch.ids, batch.values), result.model.eval()(batch.ids, batch.values),
                              atol=1e-5)
