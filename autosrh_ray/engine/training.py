"""In-process training loops: plain training (UE, retraining the kept entries), the search loop, evaluation.

Data comes from ``epoch_batches(epoch) -> Iterable[Batch]`` callables, so an in-memory loader and a Ray Data
loader are interchangeable. Early stopping watches the validation loss only; the test split is never read here.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from ..config import Config
from ..supervise import beat
from .allocator import MappedVector, keep_large_blocks
from .batch import Batch, loss_function
from .metrics import task_metrics, validation_loss
from .model import EmbeddingModel
from .model_state import cpu_state
from .search import BiLevelSearch, GradSync, ThetaOptimizer, parameter_grads

EpochBatches = Callable[[int], Iterable[Batch]]


@torch.no_grad()
def predict(model: EmbeddingModel, batches: Iterable[Batch]) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (logits or ratings) and labels over all batches (float64), gathered in mapped memory
    (:class:`~autosrh_ray.engine.allocator.MappedVector`: no small array per batch left between the forward's large
    transients)."""
    model.eval()
    outs, labels = MappedVector(), MappedVector()
    for b in batches:
        outs.extend(model(b.ids, b.values).double().cpu().numpy())
        labels.extend(b.labels.double().cpu().numpy())
    return outs.array(), labels.array()


def evaluate(model: EmbeddingModel, batches: Iterable[Batch], task: str) -> dict[str, float]:
    """Metrics over the whole split (predictions gathered, not averaged per batch)."""
    outputs, labels = predict(model, batches)
    return task_metrics(task, labels, outputs)


class Trainer:
    """Plain training steps of Θ (α fixed): UE, PEP's pruning stage, and the retrain (of the kept entries alone,
    in the packed layout).

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
        objective = loss
        penalty = getattr(self.model.embedding, "penalty", None)
        if penalty is not None:  # PEP's L2 term while it prunes
            objective = loss + penalty(batch.ids)
        grads = self.sync.theta(parameter_grads(objective, self.optimizer.params))
        self.optimizer.step(grads)
        return float(loss.detach())

    def state_dict(self) -> list:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: list) -> None:
        self.optimizer.load_state_dict(state)


@dataclass(frozen=True)
class StopRule:
    """When a training stage stops: after ``patience`` evaluations without a better validation loss, or at
    ``max_epochs`` evaluations (the cap). An evaluation closes each pass over the training data, or every
    ``eval_every_steps`` steps when that is > 0 (for data where one pass takes hours)."""

    max_epochs: int
    patience: int
    eval_every_steps: int = 0
    kept_at_most: int = 0  # PEP: also stop (stop reason "budget") once the model keeps at most this many entries

    @staticmethod
    def for_stage(config: Config, stage: str) -> "StopRule":
        """``search`` and ``pep`` stop by ``search.max_epochs``/``search.patience``; every other stage by
        ``train.*``."""
        src = config.search if stage in ("search", "pep") else config.train
        return StopRule(src.max_epochs, src.patience, config.train.eval_every_steps)

    def stops(self, best: "BestSoFar") -> bool:
        """Patience is used up: ``patience`` evaluations in a row without a better validation loss."""
        return best.since >= self.patience

    def reached(self, model: torch.nn.Module) -> bool:
        """PEP's budget stop: the model's kept entries are down to ``kept_at_most``."""
        return self.kept_at_most > 0 and model.embedding.kept_count() <= self.kept_at_most


@dataclass
class BestSoFar:
    """The best validation loss of a stage so far, its evaluation and metrics, a CPU copy of the model state it
    came from, and how many evaluations have passed since. Shared by the in-process and the Ray Train loops
    (which checkpoint it)."""

    loss: float = float("inf")
    epoch: int = -1
    metrics: dict = field(default_factory=dict)
    state: Optional[dict] = None
    since: int = 0

    def update(self, epoch: int, metrics: dict, task: str, model: torch.nn.Module) -> bool:
        """Record evaluation ``epoch``; True (and the model state copied) when its validation loss is the best."""
        loss = validation_loss(task, metrics)
        if loss < self.loss:
            self.loss, self.epoch, self.metrics, self.since = loss, epoch, metrics, 0
            self.state = cpu_state(model)
            return True
        self.since += 1
        return False


@dataclass
class FitResult:
    """What a training or search stage did: evaluations run ("epochs"), the best one and its validation metrics,
    and why it stopped (``patience`` or ``max_epochs``)."""

    epochs: int = 0
    steps: int = 0
    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    seconds: float = 0.0  # wall time of the stage, start-up included
    stop_reason: str = ""
    loop_seconds: float = 0.0  # time inside the training loop (steps and evaluations), without start-up

    def summary(self) -> dict:
        """The ``stages`` entry of ``report.json``."""
        return {"epochs": self.epochs, "steps": self.steps, "best_epoch": self.best_epoch,
                "stop_reason": self.stop_reason, "seconds": self.seconds, "loop_seconds": self.loop_seconds}


_NOT_VALIDATION = ("train_loss", "train_seconds", "data_wait_seconds", "first_batch_seconds",
                   "end_of_stream_seconds", "train_samples")


def valid_prefixed(metrics: dict) -> dict:
    """An evaluation's metrics as Ray Train and Tune get them: the validation metrics prefixed ``valid_``."""
    return {k if k in _NOT_VALIDATION or k.startswith("replica") else f"valid_{k}": v for k, v in metrics.items()}


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


def evaluation_periods(train: EpochBatches, eval_every_steps: int = 0) -> Iterator[Iterable[Batch]]:
    """The training batches between two evaluations: whole passes (``eval_every_steps`` = 0) or runs of that many
    steps that continue across passes."""
    if eval_every_steps <= 0:
        yield from (_beating(train(epoch)) for epoch in itertools.count())
        return
    stream = cycle(train, "the train split is empty")
    while True:
        yield _beating(itertools.islice(stream, eval_every_steps))


def _beating(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Each training batch is progress for the workflow's stall watchdog (:mod:`autosrh_ray.supervise`)."""
    for b in batches:
        beat()
        yield b


def train_until_stopped(step: Callable[[Batch], float], model: EmbeddingModel, train: EpochBatches,
                        valid: EpochBatches, task: str, rule: StopRule,
                        on_epoch: Optional[Callable[[int, dict], None]] = None) -> FitResult:
    """Run ``step`` over training batches, evaluate on the whole validation split after each period, stop by
    ``rule``; the model ends at its best evaluation's state (α included)."""
    keep_large_blocks()  # a step's batch-sized tensors stay in the heap: no page faults every step
    start = time.perf_counter()
    best = BestSoFar()
    result = FitResult(stop_reason="max_epochs")
    periods = evaluation_periods(train, rule.eval_every_steps)
    for epoch in range(rule.max_epochs):
        period_start, losses, rows = time.perf_counter(), [], 0
        for b in next(periods):
            losses.append(step(b))
            rows += len(b)
        seconds = time.perf_counter() - period_start
        result.steps += len(losses)
        metrics = evaluate(model, valid(epoch), task)
        metrics.update(train_loss=float(np.mean(losses)) if losses else float("nan"), train_seconds=seconds,
                       train_samples=rows)
        result.history.append(metrics)
        result.epochs = epoch + 1
        if on_epoch:
            on_epoch(epoch, metrics)
        best.update(epoch, metrics, task, model)
        if rule.reached(model):  # PEP: the state that reached the budget is the one to prune, not the best
            result.stop_reason = "budget"
            break
        if rule.stops(best):
            result.stop_reason = "patience"
            break
    result.best_epoch, result.best_valid = best.epoch, best.metrics
    if best.state is not None and result.stop_reason != "budget":
        model.load_state_dict(best.state)
    result.seconds = result.loop_seconds = time.perf_counter() - start
    return result


def fit(model: EmbeddingModel, train: EpochBatches, valid: EpochBatches, task: str, lr: float, rule: StopRule,
        on_epoch: Optional[Callable[[int, dict], None]] = None) -> FitResult:
    """Train Θ (α fixed) with early stopping on the validation loss."""
    return train_until_stopped(Trainer(model, task, lr).step, model, train, valid, task, rule, on_epoch)


def search(model: EmbeddingModel, searcher: BiLevelSearch, train: EpochBatches, alpha_batches: EpochBatches,
           valid_eval: EpochBatches, task: str, rule: StopRule,
           on_epoch: Optional[Callable[[int, dict], None]] = None) -> FitResult:
    """Bi-level steps (one train batch for Θ, one ``alpha_batches`` batch for α) until the soft model's
    validation loss stops improving (paper Alg. 2, "while not converged"); the best α/Θ are kept."""
    alpha_stream = cycle(alpha_batches)

    def step(batch: Batch) -> float:
        return searcher.step(batch, next(alpha_stream)).train_loss

    return train_until_stopped(step, model, train, valid_eval, task, rule, on_epoch)
