"""Pruning to a CR, the retrain in the packed layout against the masked dense retrain, and the compact artifact."""
import copy

import pytest
import torch

from autosrh_ray.artifact.format import load_model, save_model
from autosrh_ray.engine.packed import MaskedEmbedding, PackedEmbedding
from autosrh_ray.engine.prune import kept_count, topk_mask
from autosrh_ray.engine.training import Trainer

from .helpers import pruned_model, random_batch, tiny_model


def brute_force_topk(scores: torch.Tensor, keep: int) -> set[int]:
    flat = scores.flatten().tolist()
    order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))
    return set(order[:keep])


@pytest.mark.parametrize("cr", [1, 3, 7.5, 10, 1000])
def test_kept_count_is_exact_and_matches_brute_force_with_ties(cr):
    torch.manual_seed(0)
    scores = torch.randint(0, 5, (37, 6)).float()  # many ties
    keep = kept_count(37, 6, cr)
    assert keep == max(1, int(37 * 6 / cr + 0.5))
    mask = topk_mask(scores, keep)
    assert int(mask.sum()) == keep
    assert set(torch.nonzero(mask.flatten()).flatten().tolist()) == brute_force_topk(scores, keep)


def test_pruning_ranks_by_selected_weight_not_raw_weight():
    model = tiny_model("fm", m=4, k=2, blocks=2, fields=2, dtype=torch.float32)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([[1.0, 0.9], [0.8, 0.7], [0.3, 0.2], [0.25, 0.15]]))
        model.alpha.copy_(torch.tensor([[0.1, 0.1], [1.0, 1.0]]))  # block 0 = ids 0,1 (large |E|, small α)
    by_raw = brute_force_topk(model.embedding.weight.detach().abs(), 4)
    assert by_raw == {0, 1, 2, 3}  # |E| alone would keep ids 0 and 1
    mask = topk_mask(model.embedding.pruning_scores(), kept_count(model.embedding.num_features, model.embedding.dim, 2))  # keep 4 of 8
    expected = torch.tensor([[0, 0], [0, 0], [1, 1], [1, 1]], dtype=torch.bool)  # |E⊙α|: .3,.2,.25,.15 > .1,...
    assert torch.equal(mask.bool(), expected)


@pytest.mark.parametrize("sparse,soft", [(False, True), (True, True), (False, False)])
def test_packed_retrain_equals_the_masked_dense_retrain(sparse, soft):
    """Same forward, same Adam / SparseAdam updates: the kept entries trained alone (α applied per (block, dim) in
    the forward) track the masked M×K table step by step, and the pruned entries never exist."""
    dense = tiny_model("deepfm", sparse=sparse, soft=soft)  # float64
    mask = topk_mask(dense.embedding.pruning_scores(), kept_count(dense.embedding.num_features, dense.embedding.dim, 3))
    reference = copy.deepcopy(dense)
    reference.embedding = MaskedEmbedding(dense.embedding, mask)
    packed = pruned_model(dense, cr=3)
    assert isinstance(packed.embedding, PackedEmbedding) and packed.embedding.kept_count() == int(mask.sum())
    trainers = [Trainer(m, "classification", lr=0.05) for m in (reference, packed)]
    for step in range(25):
        batch = random_batch(seed=step)
        losses = [t.step(batch) for t in trainers]
        assert losses[0] == pytest.approx(losses[1], abs=1e-12)
    ref_weight = reference.embedding.weight.detach()
    assert torch.allclose(packed.embedding.dense(), ref_weight, atol=1e-12)
    assert torch.all(ref_weight[~mask] == 0) and torch.count_nonzero(ref_weight[mask]) == int(mask.sum())
    batch = random_batch(n=64, seed=77)
    reference.eval(), packed.eval()
    with torch.no_grad():
        assert torch.allclose(reference(batch.ids, batch.values), packed(batch.ids, batch.values), atol=1e-12)
    # the optimiser's state for the embedding holds the kept entries only
    optimizer = trainers[1].optimizer.optimizers[-1]
    moments = optimizer.state[packed.embedding.kept.weight]
    assert moments["exp_avg"].numel() == int(mask.sum()) < mask.numel()


def test_compact_artifact_round_trip_predicts_identically(tmp_path):
    model = pruned_model(tiny_model("deepfm", dtype=torch.float32), cr=4)
    trainer = Trainer(model, "classification", lr=0.05)
    for step in range(15):
        trainer.step(random_batch(seed=step, dtype=torch.float32))
    path = tmp_path / "model.pt"
    size = save_model(model, path, "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0})
    loaded = load_model(path)
    batch = random_batch(n=64, seed=99, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        diff = (model(batch.ids, batch.values) - loaded(batch.ids, batch.values)).abs().max()
    assert diff < 1e-6
    lookup = loaded.embedding
    assert isinstance(lookup, PackedEmbedding) and lookup.alpha is None and lookup.indptr.dtype == torch.int32
    assert lookup.kept_count() == model.embedding.kept_count()
    # folded values: the trained raw values times α at their (block, dimension)
    emb = model.embedding
    folded = emb.dense() * emb.alpha[emb.block_of]
    assert torch.allclose(lookup.dense(), folded, atol=1e-7)
    # the lookup against the dense folded table it stands for (features with no kept dim included)
    ids = torch.arange(30).repeat(3).reshape(-1, 3)[:40]
    values = torch.rand(ids.shape)
    with torch.no_grad():
        assert torch.allclose(lookup(ids, values), lookup.dense()[ids] * values.unsqueeze(-1), atol=1e-7)
    kept = lookup.kept_per_feature()
    assert (kept == 0).any() and (kept > 1).any()
    assert torch.equal(kept, emb.kept_per_feature())
    assert size.file > size.embedding > 0 and size.other > 0
