"""The baselines with dimensions fixed before training (grid, random, MDE) do what they claim: MDE's block
dimensions follow the popularity law at the budget, random draws differ and meet it, the mask keeps exactly the
first d dims, MDE's projection is the per-block product (against a brute-force loop) and survives the artifact,
grid picks the best K' whose M·K' fits the budget, and byte budgets size every scheme by its artifact's bytes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autosrh_ray.artifact.budget import scheme_bytes
from autosrh_ray.artifact.format import load_model, save_model
from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.embedding import SoftSelectionEmbedding
from autosrh_ray.engine.features import block_index
from autosrh_ray.engine.metrics import validation_loss
from autosrh_ray.engine.mixed_dims import (block_popularity, block_sizes, capped_dims, first_dims_mask, mde_block_dims,
                                           random_block_dims, scaled_dims)
from autosrh_ray.engine.packed import PackedEmbedding, pack
from autosrh_ray.methods.in_process import run_all_in_process

M, K, L = 5000, 16, 6


def zipf_frequencies(m: int = M, exponent: float = 1.2) -> np.ndarray:
    """Non-increasing training frequencies (ids are frequency-ordered), Zipf-like as in CTR data."""
    return np.maximum((1e6 / np.arange(1, m + 1) ** exponent).astype(np.int64), 1)


def test_mde_dimensions_follow_the_popularity_law_at_the_budget():
    freq = zipf_frequencies()
    block_of = block_index(M, L)
    sizes, p = block_sizes(block_of, L), block_popularity(freq, block_of, L)
    budget = M * K // 10
    for temperature in (0.1, 0.25, 0.5):
        dims = mde_block_dims(freq, block_of, L, K, budget, temperature)
        assert (sizes * dims).sum() <= budget  # meets the budget ...
        assert np.all(np.diff(dims) <= 0) and dims[0] > dims[-1]  # ... more popular blocks get more dimensions
        # d_b = clip(round(λ p_b^T)) for one λ: the rounded law itself, not just its ordering
        w = p ** temperature / (p ** temperature).max()
        lams = [lam for lam in np.linspace(0.5, 200, 40000)
                if np.array_equal(np.clip(np.round(lam * w), 1, K), dims)]
        assert lams, (temperature, dims)
        # and λ is the largest that fits: one more step of λ would break the budget (or every dim is already K)
        bigger = np.clip(np.round((max(lams) + 0.01) * w), 1, K)
        assert (sizes * bigger).sum() > budget or np.all(dims == K)
    flat = mde_block_dims(freq, block_of, L, K, budget, 0.0)
    assert len(set(flat.tolist())) == 1  # temperature 0: every block the same dimension


def test_random_dimensions_differ_between_trials_and_meet_the_budget():
    block_of = block_index(M, L)
    sizes = block_sizes(block_of, L)
    budget = M * K // 8
    draws = [random_block_dims(block_of, L, K, budget, np.random.default_rng([0, t])) for t in range(6)]
    assert len({tuple(d.tolist()) for d in draws}) > 3
    for d in draws:
        kept = int((sizes * d).sum())
        assert kept <= budget and kept > budget - sizes.max()  # as close to the budget as whole dims allow
        assert d.min() >= 1 and d.max() <= K


def test_scaled_dims_keep_one_dimension_when_the_budget_is_below_one_per_feature():
    sizes = np.array([10, 10])
    assert scaled_dims(np.array([1.0, 0.5]), sizes, 8, budget=5).tolist() == [1, 1]


def test_first_dims_mask_and_grid_values():
    mask = first_dims_mask(np.array([0, 2, 4]), 4)
    assert mask.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert capped_dims([2, 4, 8, 16, 32, 64], 16) == [2, 4, 8, 16]


def test_mde_projection_is_the_per_block_product_and_the_artifact_keeps_it(tmp_path):
    torch.manual_seed(0)
    block_of = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    dense = SoftSelectionEmbedding(block_of, 4, soft_selection=False, init_std=0.5, projection="block").double()
    with torch.no_grad():
        dense.projection.normal_()
    dims = np.array([4, 4, 4, 2, 2, 1, 1, 1])
    mask = first_dims_mask(dims, 4).bool()
    emb = PackedEmbedding(*pack(dense.weight.detach(), mask), 4, block_of, None, dense.projection.detach().clone(),
                          "block")
    ids = torch.tensor([[0, 3, 7], [5, 4, 1]])
    values = torch.tensor([[1.0, 0.5, 2.0], [1.5, 1.0, 0.25]], dtype=torch.float64)
    out = emb(ids, values)
    weight = dense.weight.detach() * mask
    for b in range(2):
        for f in range(3):
            i = int(ids[b, f])
            expected = weight[i] @ emb.projection.detach()[int(block_of[i])] * values[b, f]
            assert torch.allclose(out[b, f], expected, atol=1e-12)
    out.sum().backward()  # the projection learns
    assert emb.projection.grad is not None and emb.projection.grad.abs().sum() > 0

    from autosrh_ray.engine.embedding import FirstOrder
    from autosrh_ray.engine.model import EmbeddingModel
    from autosrh_ray.engine.models.backbone import build_backbone

    model = EmbeddingModel(emb.float(), FirstOrder(8), build_backbone("fm", 3, 4, {})).eval()
    save_model(model, tmp_path / "m.pt", "fm", 3, {})
    loaded = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(ids, values.float()), model(ids, values.float()), atol=1e-5)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    config = load_config(overrides=["model.name=fm", "search.K=16", "search.L=6", "train.batch_size=1024",
                                    "dataset.synthetic.rows=40000", "train.max_epochs=30"])
    prepared = prepare_synthetic(config, tmp_path_factory.mktemp("planted"))
    return config, prepared, prepared.load_split("train"), prepared.load_split("valid")


def test_grid_budget_entry_is_the_best_k_that_fits(planted):
    base, prepared, train, valid = planted
    m = prepared.num_features
    from autosrh_ray.config import with_overrides

    config = with_overrides(base, {"search.method": "grid", "search.grid_K": [2, 4, 8, 64],
                                   "prune.params": [m * 5], "prune.cr": []})
    (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
    names = [c["name"] for c in result.candidates]
    assert names == ["K2", "K4", "K8", "K16"]  # 64 capped at K = 16
    assert [c["kept"] for c in result.candidates] == [m * k for k in (2, 4, 8, 16)]
    fitting = [c for c in result.candidates if c["kept"] <= m * 5]
    chosen = [c for c in result.candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0] == min(fitting, key=lambda c: c["valid_loss"])
    assert result.model.embedding.kept_count() == chosen[0]["kept"]
    assert validation_loss("classification", result.retrain.best_valid) == chosen[0]["valid_loss"]
    assert set(result.candidate_states) == set(names)


def test_random_and_mde_train_at_the_budget_with_their_block_dims(planted):
    base, prepared, train, valid = planted
    from autosrh_ray.config import with_overrides

    budget = prepared.num_features * 16 // 10
    for method in ("random", "mde"):
        config = with_overrides(base, {"search.method": method, "search.random_trials": 3})
        (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
        emb = result.model.embedding
        kept_per_feature = emb.kept_per_feature()
        block_dims = torch.tensor(result.block_dims)
        assert torch.equal(kept_per_feature, block_dims[emb.block_of])  # every feature: its block's first d
        assert emb.kept_count() <= budget
        assert len(result.candidates) == (3 if method == "random" else 1)
        assert (emb.projection is not None) == (method == "mde")
        if method == "mde":
            assert list(result.block_dims) == sorted(result.block_dims, reverse=True)  # popular blocks first


@pytest.mark.parametrize("precision, projection", [("int8", "block"), (("fp16", "int4", "int4"), "block"),
                                                   ("fp32", None), ("int4", None)])
def test_a_fixed_schemes_bytes_are_its_artifacts(precision, projection):
    """scheme_bytes (what a byte budget sizes random / MDE / grid with) equals the bytes the artifact writes for a
    model of that scheme — values at the precision, index, scales and biases, and MDE's projections."""
    torch.manual_seed(0)
    block_of = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    starts = (0, 3, 5)
    dense = SoftSelectionEmbedding(block_of, 16, soft_selection=False, init_std=0.5, projection=projection)
    dims = np.array([16, 16, 16, 5, 5, 1, 1, 1])
    emb = PackedEmbedding(*pack(dense.weight.detach(), first_dims_mask(dims, 16).bool()), 16, block_of, None,
                          None if projection is None else dense.projection.detach().clone(), projection)
    from autosrh_ray.artifact.format import embedding_bytes_of
    from autosrh_ray.engine.embedding import FirstOrder
    from autosrh_ray.engine.model import EmbeddingModel
    from autosrh_ray.engine.models.backbone import build_backbone

    model = EmbeddingModel(emb, FirstOrder(8), build_backbone("fm", 3, 16, {}))
    stored = embedding_bytes_of(model, precision, starts if isinstance(precision, tuple) else (0,))
    assert scheme_bytes(dims, 16, precision, starts if isinstance(precision, tuple) else (0,),
                        3 if projection else 0) == stored


@pytest.mark.parametrize("block_of, runs", [
    (np.repeat([0, 1, 2], [150, 100, 150]), True),  # MDE's frequency blocks, id ranges: 3 runs, 15 bytes, not 400
    (np.tile([0, 1, 2, 1], 100), False),  # groups that change at every id: one byte per feature is cheaper
])
def test_the_groups_of_the_projections_are_stored_as_runs_when_cheaper_and_read_back(tmp_path, block_of, runs):
    from autosrh_ray.artifact.format import tensor_bytes
    from autosrh_ray.engine.embedding import FirstOrder
    from autosrh_ray.engine.model import EmbeddingModel
    from autosrh_ray.engine.models.backbone import build_backbone

    torch.manual_seed(0)
    block_of = torch.from_numpy(block_of)
    m = block_of.numel()
    dense = SoftSelectionEmbedding(block_of, 8, soft_selection=False, init_std=0.5, projection="block")
    dims = np.where(np.arange(m) < 60, 8, 2)
    emb = PackedEmbedding(*pack(dense.weight.detach(), first_dims_mask(dims, 8).bool()), 8, block_of, None,
                          dense.projection.detach().clone() + 0.1 * torch.randn(3, 8, 8), "block")
    model = EmbeddingModel(emb, FirstOrder(m), build_backbone("fm", 2, 8, {})).eval()
    save_model(model, tmp_path / "m.pt", "fm", 2, {})
    section = torch.load(tmp_path / "m.pt", weights_only=True)["projection"]
    assert ("group_runs" in section) == runs and ("groups" in section) != runs
    weights = section.pop("weights")
    assert tensor_bytes(section) == (3 * 5 if runs else m) and weights.shape == (3, 8, 8)
    if runs:  # what a byte budget sizes MDE with
        assert scheme_bytes(dims, 8, "fp32", (0,), 3) == tensor_bytes(torch.load(tmp_path / "m.pt", weights_only=True)
                                                                      ["embedding"]) + 3 * 8 * 8 * 4 + 15
    loaded = load_model(tmp_path / "m.pt")
    assert torch.equal(loaded.embedding.block_of.long(), block_of.long())
    ids = torch.randint(0, m, (64, 2))
    with torch.no_grad():
        assert torch.allclose(loaded(ids, torch.ones(64, 2)), model(ids, torch.ones(64, 2)), atol=1e-6)


def test_byte_budgets_size_fixed_schemes_by_their_artifacts_bytes(planted):
    """grid keeps the best K' whose artifact fits the bytes at each precision; random and MDE scale their block
    dimensions to the most entries that fit (their projections counted), and fit."""
    base, prepared, train, valid = planted
    from autosrh_ray.config import with_overrides

    m = prepared.num_features
    budget_bytes = m * 16 * 4 // 10
    results = run_all_in_process(with_overrides(base, {"search.method": "grid", "search.grid_K": [1, 2, 4, 8, 16],
                                                       "prune.bytes_cr": 10, "prune.cr": []}),
                                 prepared, train, valid, log=lambda _: None)
    # no per-block ones; int8 and int4 with scales per row and per block and dimension (prune.int_scales: auto)
    assert sorted((r.budget.precision, r.budget.int_scales) for r in results) == [
        ("fp16", "row"), ("fp32", "row"), ("int4", "dim"), ("int4", "row"), ("int8", "dim"), ("int8", "row")]
    for r in results:
        sizes = {c["name"]: scheme_bytes(np.full(m, int(c["name"][1:])), 16, r.budget.precision,
                                         r.budget.block_starts, 0, r.budget.int_scales)
                 for c in r.candidates}
        fitting = [c for c in r.candidates if sizes[c["name"]] <= budget_bytes]
        (chosen,) = [c for c in r.candidates if c["chosen"]]
        if r.budget.precision in ("int8", "int4") and r.budget.int_scales == "row":
            assert not fitting and chosen["name"] == "K1"  # 4 B of scale and bias a row: not even K' 1 fits
        else:
            assert chosen == min(fitting, key=lambda c: c["valid_loss"])
        assert r.budget.kept == r.model.embedding.kept_count() == chosen["kept"] and r.budget.bytes == budget_bytes
    # by hand, per feature (budget 6.4 B): bitmap ⅛ + index min(1 + K', K/8 = 2) + values — fp32 K' 1: 6.125 B,
    # K' 2: 10.125; fp16 K' 2: 6.125, K' 4: 10.125
    widest = {r.budget.precision: max(int(c["name"][1:]) for c in r.candidates
                                      if scheme_bytes(np.full(m, int(c["name"][1:])), 16, r.budget.precision)
                                      <= budget_bytes) for r in results if r.budget.precision in ("fp32", "fp16")}
    assert widest == {"fp32": 1, "fp16": 2}
    # with L·K scales instead of 4 B a row, int8 fits K' 4 (bitmap ⅛ + mask 2 + values 4 B = 6.125 B a feature),
    # int4 K' 8 (⅛ + 2 + 4)
    assert {r.budget.precision: max(int(c["name"][1:]) for c in r.candidates if scheme_bytes(
        np.full(m, int(c["name"][1:])), 16, r.budget.precision, r.budget.block_starts, 0, "dim") <= budget_bytes)
        for r in results if r.budget.int_scales == "dim"} == {"int8": 4, "int4": 8}

    budget_bytes = m * 16 * 4 // 4  # 16 B a feature: MDE's int8 rows pay 4 B of scale and bias and 1 B of group
    for method, precision, projections in (("mde", "int8", 6), ("random", "fp16", 0)):
        config = with_overrides(base, {"search.method": method, "search.random_trials": 2, "prune.bytes_cr": 4,
                                       "prune.cr": [], "prune.precision": precision})
        (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
        block_of = block_index(m, 6)
        for c in result.candidates:
            feature_dims = np.asarray(c["block_dims"])[block_of]
            assert scheme_bytes(feature_dims, 16, precision, (0,), projections) <= budget_bytes, (method, c)
            assert c["kept"] > m  # more than one dimension a feature: the bytes, not the floor, set the dims
        assert result.budget.kept == result.model.embedding.kept_count()
