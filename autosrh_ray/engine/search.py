"""Bi-level adaptive dimensionality search (paper Alg. 2, Eqs. 12–14).

One :meth:`BiLevelSearch.step` takes a training and a validation mini-batch:

1. ``g = ∇Θ L_train(Θ, α)`` (Θ = backbone θ and embedding E; α takes part in the forward).
2. First order: Θ ← optimiser step with g; then ``g_α = ∇α L_val(Θ, α)``.
   Second order (Eq. 13): ``Θ' = Θ − ξ g`` is a *virtual* SGD step from the same g;
   ``g_α = ∇α L_val(Θ', α) − ξ ∇²_{α,Θ} L_train(Θ, α) · ∇_{Θ'} L_val(Θ', α)``, the Hessian-vector product
   by central finite differences (DARTS: ε = ``fd_eps`` / ‖v‖) or by double backward. Θ is restored exactly,
   then the real optimiser step uses g.
3. Row-wise normalisation (Eq. 14): ``g_α[l] / (mean_k |g_α[l, k]| + 1e-7)``; α step (Adam or SGD); clip to [0, 1].

A :class:`GradSync` lets a distributed caller average Θ's gradients (and the second-order direction v) and
all-reduce α's gradient before normalisation, so α stays identical on every worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .batch import Batch, loss_function
from .model import EmbeddingModel

GRAD_NORM_EPS = 1e-7


class GradSync:
    """Hooks for data-parallel training; the base class is the single-process no-op."""

    def theta(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Average Θ's gradients (dense or sparse) across workers."""
        return grads

    def alpha(self, grad: torch.Tensor) -> torch.Tensor:
        """Average α's gradient across workers (before normalisation)."""
        return grad


def normalize_rows(grad: torch.Tensor, eps: float = GRAD_NORM_EPS) -> torch.Tensor:
    """Eq. 14: divide each row by its mean absolute value + eps (a zero row stays zero)."""
    return grad / (grad.abs().mean(dim=1, keepdim=True) + eps)


class ThetaOptimizer:
    """Adam for dense parameters plus SparseAdam for parameters that get sparse gradients."""

    def __init__(self, model: EmbeddingModel, lr: float):
        params = list(model.theta_parameters())
        sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
        self.params = params
        dense = [p for p in params if id(p) not in sparse_ids]
        sparse = [p for p in params if id(p) in sparse_ids]
        self.optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr)]
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self, grads: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Step with the given gradients (aligned with ``self.params``) or with the ``.grad`` already set."""
        if grads is not None:
            for p, g in zip(self.params, grads):
                p.grad = g
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)


def parameter_grads(loss: torch.Tensor, params: Sequence[torch.Tensor],
                    create_graph: bool = False) -> list[torch.Tensor]:
    """∂loss/∂p for each p (zeros where unused; sparse gradients coalesced)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True, create_graph=create_graph)
    out = []
    for p, g in zip(params, grads):
        if g is None:
            g = torch.zeros_like(p)
        elif g.is_sparse:
            g = g.coalesce()
        out.append(g)
    return out


def _sq_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((g._values() if g.is_sparse else g).pow(2).sum() for g in grads)


class _Snapshot:
    """Saves the parameter entries a direction will touch (only the touched rows for sparse directions)."""

    def __init__(self, params: Sequence[torch.Tensor], directions: Sequence[Sequence[torch.Tensor]]):
        self.saved = []
        for i, p in enumerate(params):
            gs = [d[i] for d in directions]
            if all(g.is_sparse for g in gs):
                rows = torch.cat([g._indices()[0] for g in gs]).unique()
                self.saved.append((p, rows, p.data[rows].clone()))
            else:
                self.saved.append((p, None, p.data.clone()))

    @torch.no_grad()
    def restore(self) -> None:
        for p, rows, data in self.saved:
            if rows is None:
                p.data.copy_(data)
            else:
                p.data[rows] = data


@torch.no_grad()
def _add_(params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor], scale: float) -> None:
    for p, d in zip(params, direction):
        p.data.add_(d, alpha=scale)


@dataclass
class SearchStepStats:
    train_loss: float
    valid_loss: float


class BiLevelSearch:
    """The search step for one model; holds the Θ and α optimisers."""

    def __init__(self, model: EmbeddingModel, task: str, lr: float = 1e-3, lr_alpha: float = 1e-2,
                 alpha_optimizer: str = "adam", order: str = "first", xi: Optional[float] = None,
                 hvp: str = "finite_difference", fd_eps: float = 0.01, sync: Optional[GradSync] = None):
        if model.alpha is None:
            raise ValueError("BiLevelSearch needs a model with architecture weights α (search.method: autosrh or "
                             "autodim)")
        self.model = model
        self.loss = loss_function(task)
        self.theta = ThetaOptimizer(model, lr)
        self.params = self.theta.params
        alpha_cls = torch.optim.Adam if alpha_optimizer == "adam" else torch.optim.SGD
        self.alpha_opt = alpha_cls([model.alpha], lr=lr_alpha)
        self.order = order
        self.xi = lr if xi is None else xi
        self.hvp = hvp
        self.fd_eps = fd_eps
        self.sync = sync or GradSync()

    def _batch_loss(self, batch: Batch) -> torch.Tensor:
        return self.loss(self.model(batch.ids, batch.values), batch.labels)

    def second_order_correction(self, train: Batch, valid: Batch, train_grads: list[torch.Tensor],
                                train_grad_graph: Optional[list[torch.Tensor]] = None):
        """(∇α L_val(Θ', α), −ξ ∇²_{α,Θ} L_train · ∇_{Θ'} L_val) at the current Θ; Θ is left unchanged.

        ``train_grads`` is ∇Θ L_train(Θ, α) (already synchronised); ``train_grad_graph`` the same with a graph
        (``hvp: double_backward`` only).
        """
        params, alpha = self.params, self.model.alpha
        snapshot = _Snapshot(params, [train_grads])
        _add_(params, train_grads, -self.xi)  # Θ' = Θ − ξ g (virtual step)
        val_loss = self._batch_loss(valid)
        grads = parameter_grads(val_loss, [alpha, *params])
        snapshot.restore()
        d_alpha, v = grads[0], self.sync.theta(grads[1:])
        if self.hvp == "double_backward":
            dot = sum((g * (vi.to_dense() if vi.is_sparse else vi)).sum() for g, vi in zip(train_grad_graph, v))
            hvp = torch.autograd.grad(dot, alpha)[0]
        else:
            eps = self.fd_eps / (_sq_norm(v).sqrt().item() + 1e-12)
            around = _Snapshot(params, [v])
            _add_(params, v, eps)
            g_plus = parameter_grads(self._batch_loss(train), [alpha])[0]
            _add_(params, v, -2 * eps)
            g_minus = parameter_grads(self._batch_loss(train), [alpha])[0]
            around.restore()
            hvp = (g_plus - g_minus) / (2 * eps)
        return d_alpha, -self.xi * hvp, val_loss

    def step(self, train: Batch, valid: Batch) -> SearchStepStats:
        """One bi-level step: Θ from the train batch, α from the validation batch."""
        self.model.train()
        alpha = self.model.alpha
        double = self.order == "second" and self.hvp == "double_backward"
        train_loss = self._batch_loss(train)
        graph = parameter_grads(train_loss, self.params, create_graph=True) if double else None
        grads = [g.detach() for g in graph] if double else parameter_grads(train_loss, self.params)
        grads = self.sync.theta(grads)
        if self.order == "second":
            d_alpha, correction, val_loss = self.second_order_correction(train, valid, grads, graph)
            g_alpha = d_alpha + correction
            self.theta.step(grads)
        else:
            self.theta.step(grads)
            val_loss = self._batch_loss(valid)
            g_alpha = parameter_grads(val_loss, [alpha])[0]
        g_alpha = self.sync.alpha(g_alpha)
        if getattr(self.model.embedding, "alpha_is_logits", False):  # AutoDim's field weights: plain gradients
            alpha.grad = g_alpha
            self.alpha_opt.step()
        else:  # AutoSrh's soft selection: Eq. 14, then back into [0, 1]
            alpha.grad = normalize_rows(g_alpha)
            self.alpha_opt.step()
            with torch.no_grad():
                alpha.clamp_(0.0, 1.0)
        return SearchStepStats(float(train_loss.detach()), float(val_loss.detach()))

    def state_dict(self) -> dict:
        return {"theta": self.theta.state_dict(), "alpha": self.alpha_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.theta.load_state_dict(state["theta"])
        self.alpha_opt.load_state_dict(state["alpha"])
