"""Backbones and metrics against brute-force references."""
import itertools

import numpy as np
import pytest
import torch

from autosrh_ray.engine.metrics import auc, logloss
from autosrh_ray.engine.models.fm import fm_pairwise

from .helpers import random_batch, tiny_model


def test_fm_pairwise_equals_brute_force_sum_over_field_pairs():
    emb = torch.randn(5, 4, 3, dtype=torch.float64)
    brute = torch.zeros(5, dtype=torch.float64)
    for f, g in itertools.combinations(range(4), 2):
        brute += (emb[:, f] * emb[:, g]).sum(-1)  # summed over K, not averaged
    assert torch.allclose(fm_pairwise(emb), brute, rtol=1e-12)


def test_fm_pairwise_gradients_equal_autograd_of_the_plain_expression_to_second_order():
    """The closed-form backward against autograd of ½ Σ_k [(Σ_f e)² − Σ_f e²] (float64): first derivatives, and
    the Hessian-vector product the double-backward second-order search takes through it."""
    emb = torch.randn(6, 5, 4, dtype=torch.float64, requires_grad=True)
    weights, direction = torch.randn(6, dtype=torch.float64), torch.randn(6, 5, 4, dtype=torch.float64)

    def plain(e):
        return 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=1)

    grads = []
    for f in (fm_pairwise, plain):
        (g,) = torch.autograd.grad((f(emb) * weights).sum(), emb, create_graph=True)
        (hvp,) = torch.autograd.grad((g * direction).sum(), emb)
        grads.append((g.detach(), hvp))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)
    assert grads[0][1].abs().sum() > 0
    assert torch.autograd.gradcheck(fm_pairwise, (emb,)) and torch.autograd.gradgradcheck(fm_pairwise, (emb,))


@pytest.mark.parametrize("name,task,fields", [("fm", "classification", 3), ("widedeep", "classification", 3),
                                              ("deepfm", "classification", 3), ("mf", "regression", 2),
                                              ("mlp", "regression", 3), ("neumf", "regression", 2)])
def test_every_backbone_maps_batch_to_one_output_and_uses_embeddings(name, task, fields):
    model = tiny_model(name, fields=fields)
    batch = random_batch(fields=fields, task=task)
    out = model(batch.ids, batch.values)
    assert out.shape == (len(batch),)
    out.sum().backward()
    assert model.embedding.weight.grad.abs().sum() > 0
    assert model.alpha.grad.abs().sum() > 0  # α takes part in the forward


def test_mf_prediction_is_bias_plus_dot_product():
    model = tiny_model("mf", fields=2, soft=False)
    batch = random_batch(n=4, fields=2, task="regression")
    e = model.embedding.weight[batch.ids] * batch.values.unsqueeze(-1)
    w = model.first_order.weight.weight[batch.ids].squeeze(-1)
    expected = (w * batch.values).sum(1) + model.first_order.bias + (e[:, 0] * e[:, 1]).sum(1)
    assert torch.allclose(model(batch.ids, batch.values), expected)


def brute_force_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_brute_force_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=200).astype(float)  # heavy ties
    labels = rng.random(200) < 0.3
    assert auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_logloss_matches_definition():
    y = np.array([1, 0, 1, 0.0])
    p = np.array([0.9, 0.2, 0.6, 0.4])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert logloss(y, p) == pytest.approx(expected)
