"""Pruning to a CR, mask enforcement during retraining, and the compact artifact."""
import pytest
import torch

from autosrh_ray.artifact import CompactEmbedding, CompactLookup, load_model, save_model
from autosrh_ray.prune import kept_count, prune, topk_mask
from autosrh_ray.training import Trainer

from .helpers import random_batch, tiny_model


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
    mask = prune(model.embedding, cr=2)  # keep 4 of 8
    expected = torch.tensor([[0, 0], [0, 0], [1, 1], [1, 1]], dtype=torch.bool)  # |E⊙α|: .3,.2,.25,.15 > .1,...
    assert torch.equal(mask.bool(), expected)


def _retrained_model(sparse: bool):
    model = tiny_model("deepfm", sparse=sparse, dtype=torch.float32)
    prune(model.embedding, cr=4)
    trainer = Trainer(model, "classification", lr=0.05)
    for step in range(15):
        trainer.step(random_batch(seed=step, dtype=torch.float32))
    return model


@pytest.mark.parametrize("sparse", [False, True])
def test_pruned_entries_stay_exactly_zero_while_kept_ones_train(sparse):
    model = _retrained_model(sparse)
    mask = model.embedding.mask.bool()
    weight = model.embedding.weight.detach()
    assert torch.all(weight[~mask] == 0.0)
    assert torch.count_nonzero(weight[mask]) == int(mask.sum())
    assert model.alpha.requires_grad is False


def test_compact_artifact_round_trip_predicts_identically(tmp_path):
    model = _retrained_model(sparse=False)
    path = tmp_path / "model.pt"
    size = save_model(model, path, "deepfm", num_fields=3, hidden=[8, 8], dropout=0.0)
    loaded = load_model(path)
    batch = random_batch(n=64, seed=99, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        diff = (model(batch.ids, batch.values) - loaded(batch.ids, batch.values)).abs().max()
    assert diff < 1e-6
    compact = CompactEmbedding.from_embedding(model.embedding)
    assert compact.values.numel() == int(model.embedding.mask.sum())
    # the compact lookup against the dense folded table it stands for (features with no kept dim included)
    ids = torch.arange(compact.num_features).repeat(3).reshape(-1, 3)[:40]
    values = torch.rand(ids.shape)
    reference = compact.dense()[ids] * values.unsqueeze(-1)
    assert torch.equal(CompactLookup(compact)(ids, values), reference)
    assert (compact.kept_dims() == 0).any() and (compact.kept_dims() > 1).any()
    assert torch.equal(compact.kept_dims(), model.embedding.mask.sum(1).long())
    assert size > 0


def _prune_mid_training(sparse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Train unpruned (Adam builds momentum on every entry), prune, keep training with the same optimiser."""
    model = tiny_model("deepfm", sparse=sparse, dtype=torch.float32)
    trainer = Trainer(model, "classification", lr=0.05)
    for step in range(10):
        trainer.step(random_batch(seed=step, dtype=torch.float32))
    mask = prune(model.embedding, cr=4).bool()
    for step in range(10, 20):
        trainer.step(random_batch(seed=step, dtype=torch.float32))
    return model.embedding.weight.detach(), mask


@pytest.mark.parametrize("sparse", [False, True])
def test_mask_enforcement_is_what_keeps_pruned_entries_at_zero(sparse, monkeypatch):
    weight, mask = _prune_mid_training(sparse)
    assert torch.all(weight[~mask] == 0.0)
    # The same run without enforcement: the optimiser's momentum moves pruned entries, so the check above is
    # really testing enforce_mask (not a zero gradient that would keep them at zero anyway).
    monkeypatch.setattr("autosrh_ray.embedding.SoftSelectionEmbedding.enforce_mask", lambda self, rows=None: None)
    unenforced, _ = _prune_mid_training(sparse)
    assert (unenforced[~mask] != 0).sum() > 0
