"""Bi-level search step: second-order correction, gradient normalisation, α bounds."""
import pytest
import torch
from torch.func import functional_call

from autosrh_ray.engine.batch import loss_function
from autosrh_ray.engine.search import BiLevelSearch, normalize_rows, parameter_grads

from .helpers import random_batch, tiny_model

XI = 0.1


def reference_correction(model, train, valid, xi):
    """Exact Eq. 13 correction by differentiating through the unrolled virtual step (float64).

    d/dα L_val(Θ − ξ∇Θ L_train(Θ, α), α) minus its direct part ∇α L_val(Θ', α).
    """
    loss = loss_function("classification")
    names = [n for n, p in model.named_parameters() if n != "embedding.alpha"]
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if n in names}
    alpha = model.alpha.detach().clone().requires_grad_(True)

    def forward(params, batch):
        out = functional_call(model, {**params, "embedding.alpha": alpha}, (batch.ids, batch.values))
        return loss(out, batch.labels)

    grads = torch.autograd.grad(forward(theta, train), list(theta.values()), create_graph=True)
    virtual = {n: p - xi * g for (n, p), g in zip(theta.items(), grads)}
    total = torch.autograd.grad(forward(virtual, valid), alpha)[0]
    detached = {n: p.detach() for n, p in virtual.items()}
    direct = torch.autograd.grad(forward(detached, valid), alpha)[0]
    return total - direct, direct


@pytest.mark.parametrize("hvp", ["finite_difference", "double_backward"])
@pytest.mark.parametrize("name", ["fm", "deepfm"])
def test_second_order_correction_matches_unrolled_autograd(hvp, name):
    model = tiny_model(name)
    train, valid = random_batch(seed=1), random_batch(seed=2)
    ref_corr, ref_direct = reference_correction(model, train, valid, XI)
    searcher = BiLevelSearch(model, "classification", order="second", xi=XI, hvp=hvp)
    graph = parameter_grads(searcher._batch_loss(train), searcher.params, create_graph=hvp == "double_backward")
    grads = [g.detach() for g in graph]
    before = [p.detach().clone() for p in model.parameters()]
    direct, corr, _ = searcher.second_order_correction(train, valid, grads, graph)
    assert ref_corr.abs().max() > 1e-6  # the correction is not trivially zero here
    rel = (corr - ref_corr).norm() / ref_corr.norm()
    assert rel < 1e-4, f"relative error {rel:.2e}"
    assert torch.allclose(direct, ref_direct, rtol=1e-10, atol=1e-12)
    for b, p in zip(before, model.parameters()):  # Θ restored exactly after the virtual/perturbed steps
        assert torch.equal(b, p.detach())


def test_finite_difference_with_sparse_gradients_matches_dense():
    train, valid = random_batch(seed=3), random_batch(seed=4)
    results = []
    for sparse in (False, True):
        model = tiny_model("fm", sparse=sparse)
        s = BiLevelSearch(model, "classification", order="second", xi=XI)
        grads = parameter_grads(s._batch_loss(train), s.params)
        results.append(s.second_order_correction(train, valid, grads)[1])
    assert torch.allclose(results[0], results[1], rtol=1e-8, atol=1e-12)


def test_gradient_normalisation_matches_eq14_and_keeps_zero_rows():
    g = torch.randn(5, 7, dtype=torch.float64) * torch.tensor([1e-6, 1.0, 1e3, 0.0, 5.0], dtype=torch.float64)[:, None]
    out = normalize_rows(g)
    ref = torch.empty_like(g)
    for r in range(5):  # Eq. 14 written out per row
        denom = sum(abs(float(x)) for x in g[r]) / 7 + 1e-7
        for c in range(7):
            ref[r, c] = float(g[r, c]) / denom
    assert torch.allclose(out, ref, rtol=1e-12, atol=0)
    assert torch.equal(out[3], torch.zeros(7, dtype=torch.float64))


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("alpha_optimizer", ["adam", "sgd"])
def test_alpha_stays_in_unit_interval_and_theta_and_alpha_move(order, alpha_optimizer):
    model = tiny_model("deepfm", dtype=torch.float32)
    alpha0 = model.alpha.detach().clone()
    theta0 = model.embedding.weight.detach().clone()
    s = BiLevelSearch(model, "classification", lr_alpha=0.5, alpha_optimizer=alpha_optimizer, order=order)
    for step in range(12):
        s.step(random_batch(seed=10 + step, dtype=torch.float32), random_batch(seed=100 + step, dtype=torch.float32))
        assert model.alpha.min() >= 0.0 and model.alpha.max() <= 1.0
    assert not torch.equal(model.alpha.detach(), alpha0)
    assert not torch.equal(model.embedding.weight.detach(), theta0)
    assert (model.alpha == 0).any() or (model.alpha == 1).any()  # the large lr really hit the clip


def test_first_order_alpha_gradient_uses_validation_batch_after_theta_step():
    """With SGD on α (lr 1) and one step, α moves by −normalised ∇α L_val at the updated Θ."""
    model = tiny_model("fm")
    train, valid = random_batch(seed=5), random_batch(seed=6)
    s = BiLevelSearch(model, "classification", lr=0.05, lr_alpha=1e-3, alpha_optimizer="sgd")
    alpha0 = model.alpha.detach().clone()
    s.step(train, valid)
    stepped = model.alpha.detach().clone()
    loss = loss_function("classification")
    model.alpha.data.copy_(alpha0)
    expected_grad = torch.autograd.grad(loss(model(valid.ids, valid.values), valid.labels), model.alpha)[0]
    expected = (alpha0 - 1e-3 * normalize_rows(expected_grad)).clamp(0, 1)
    assert torch.allclose(stepped, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("hvp, tol", [("double_backward", 1e-10), ("finite_difference", 1e-5)])
def test_second_order_step_moves_alpha_and_theta_as_the_unrolled_reference(hvp, tol):
    """Through ``step()`` itself: α moves by −lr·Eq.14(d/dα L_val(Θ − ξ∇Θ L_train, α)) (total derivative, exact
    autograd through the virtual step) and Θ by one Adam step with ∇Θ L_train — and that differs from what a
    first-order step would do, so a step() that silently ran first order fails here."""
    lr_alpha, lr = 0.02, 0.01
    model = tiny_model("deepfm")
    train, valid = random_batch(seed=7), random_batch(seed=8)
    alpha0 = model.alpha.detach().clone()
    correction, direct = reference_correction(model, train, valid, XI)
    expected_alpha = (alpha0 - lr_alpha * normalize_rows(direct + correction)).clamp(0, 1)

    reference = tiny_model("deepfm")  # same seed: same initial Θ, α
    theta = list(reference.theta_parameters())
    grads = torch.autograd.grad(loss_function("classification")(reference(train.ids, train.values), train.labels),
                                theta)
    adam = torch.optim.Adam(theta, lr=lr)
    for p, g in zip(theta, grads):
        p.grad = g
    adam.step()

    searcher = BiLevelSearch(model, "classification", lr=lr, lr_alpha=lr_alpha, alpha_optimizer="sgd",
                             order="second", xi=XI, hvp=hvp)
    searcher.step(train, valid)
    assert torch.allclose(model.alpha.detach(), expected_alpha, rtol=0, atol=tol)
    for p, q in zip(model.theta_parameters(), reference.theta_parameters()):
        assert torch.allclose(p.detach(), q.detach(), rtol=0, atol=1e-12)

    # What first order would have given: ∇α L_val at the stepped Θ, no correction.
    with torch.no_grad():
        reference.alpha.copy_(alpha0)
    first = torch.autograd.grad(loss_function("classification")(reference(valid.ids, valid.values), valid.labels),
                                reference.alpha)[0]
    first_order_alpha = (alpha0 - lr_alpha * normalize_rows(first)).clamp(0, 1)
    assert (first_order_alpha - expected_alpha).abs().max() > 1e-4  # ≥ 10× the finite-difference tolerance
