"""In-process training loops: plain training (UE, retraining with a mask), the search loop, evaluation.

Data comes from ``epoch_batches(epoch) -> Iterable[Batch]`` callables, so an in-memory loader and a Ray Data
loader are interchangeable. Early stopping watches the validation loss only; the test split is never read here.
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from .batch import Batch, loss_function
from .metrics import task_metrics, validation_loss
from .models import EmbeddingModel
from .search import BiLevelSearch, GradSync, ThetaOptimizer, parameter_grads

EpochBatches = Callable[[int], Iterable[Batch]]


@torch.no_grad()
def predict(model: EmbeddingModel, batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (logits or ratings) and labels over all batches."""
    model.eval()
    outs, labels = [], []
    for b in batches:
        outs.append(model(b.ids, b.values).double().cpu().numpy())
        labels.append(b.labels.double().cpu().numpy())
    if not outs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(outs), np.concatenate(labels)


def evaluate(model: EmbeddingModel, batches: Iterable[Batch], task: str) -> dict[str, float]:
    """Metrics over the whole split (predictions gathered, not averaged per batch)."""
    outputs, labels = predict(model, batches)
    return task_metrics(task, labels, outputs)


class Trainer:
    """Plain training steps of Θ (α fixed); enforces the pruning mask on the rows each step touched.

    ``sync`` averages Θ's gradients across data-parallel workers (the no-op :class:`GradSync` in one process).
    """

    def __init__(self, model: EmbeddingModel, task: str, lr: float, sync: Optional[GradSync] = None):
        self.model = model
        self.loss = loss_function(task)
        self.optimizer = ThetaOptimizer(model, lr)
        self.sync = sync or GradSync()

    def step(self, batch: Batch) -> float:
        self.model.train()
        loss = self.loss(self.model(batch.ids, batch.values), batch.labels)
        grads = self.sync.theta(parameter_grads(loss, self.optimizer.params))
        self.optimizer.step(grads)
        if self.model.embedding.mask is not None:
            self.model.embedding.enforce_mask(batch.ids.unique())
        return float(loss.detach())

    def state_dict(self) -> list:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: list) -> None:
        self.optimizer.load_state_dict(state)


@dataclass
class FitResult:
    """What a training or search stage did: epochs run, the best epoch and its validation metrics."""

    epochs: int = 0
    steps: int = 0
    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    seconds: float = 0.0


class EarlyStopping:
    """Tracks the best validation loss; keeps a copy of the best model state."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss = float("inf")
        self.best_state: Optional[dict] = None
        self.bad_epochs = 0

    def update(self, loss: float, model: torch.nn.Module) -> bool:
        """Record an epoch's validation loss; True when training should stop."""
        if loss < self.best_loss:
            self.best_loss, self.bad_epochs = loss, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


def fit(model: EmbeddingModel, train: EpochBatches, valid: EpochBatches, task: str, lr: float, max_epochs: int,
        patience: int, on_epoch: Optional[Callable[[int, dict], None]] = None) -> FitResult:
    """Train Θ with early stopping on the validation loss; the model ends at its best epoch's state."""
    start = time.perf_counter()
    trainer = Trainer(model, task, lr)
    stopper = EarlyStopping(patience)
    result = FitResult()
    for epoch in range(max_epochs):
        losses = [trainer.step(b) for b in train(epoch)]
        result.steps += len(losses)
        metrics = evaluate(model, valid(epoch), task)
        metrics["train_loss"] = float(np.mean(losses)) if losses else float("nan")
        result.history.append(metrics)
        result.epochs = epoch + 1
        if on_epoch:
            on_epoch(epoch, metrics)
        stop = stopper.update(validation_loss(task, metrics), model)
        if stopper.bad_epochs == 0:
            result.best_epoch, result.best_valid = epoch, metrics
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    result.seconds = time.perf_counter() - start
    return result


def cycle(epoch_batches: EpochBatches,
          empty_error: str = "the validation split is empty; the search needs validation batches") -> Iterator[Batch]:
    """Batches without end (the α validation stream): restart with the next epoch whenever one runs out."""
    for epoch in itertools.count():
        empty = True
        for b in epoch_batches(epoch):
            empty = False
            yield b
        if empty:
            raise ValueError(empty_error)


def search(model: EmbeddingModel, searcher: BiLevelSearch, train: EpochBatches, valid: EpochBatches,
           valid_eval: EpochBatches, task: str, epochs: int,
           on_epoch: Optional[Callable[[int, dict], None]] = None) -> FitResult:
    """Run ``epochs`` epochs of bi-level steps (one train + one validation batch each)."""
    start = time.perf_counter()
    result = FitResult()
    val_stream = cycle(valid)
    for epoch in range(epochs):
        stats = [searcher.step(b, next(val_stream)) for b in train(epoch)]
        result.steps += len(stats)
        metrics = evaluate(model, valid_eval(epoch), task)
        metrics["train_loss"] = float(np.mean([s.train_loss for s in stats])) if stats else float("nan")
        result.history.append(metrics)
        result.epochs = epoch + 1
        result.best_epoch, result.best_valid = epoch, metrics
        if on_epoch:
            on_epoch(epoch, metrics)
    result.seconds = time.perf_counter() - start
    return result
