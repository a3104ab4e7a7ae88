"""Ray Train train functions: the bi-level search loop and the plain training loop (UE / retrain with a mask).

One function, :func:`train_loop`, serves both stages (``LoopSpec.stage``); per worker it

1. builds the model skeleton and loads the initial state from the driver (so every rank starts identical),
   or the latest checkpoint when Ray Train restarts the run (failure, or a re-run with the same
   ``storage_path``/``name``);
2. runs evaluation periods (passes, or ``train.eval_every_steps`` steps) in lockstep (:class:`~.feed.PeriodFeed`:
   every step all ranks agree that each has a batch, so no collective is left waiting); Θ's gradients are
   averaged and α's gradient is all-reduced before normalisation (:class:`~.sync.TorchDistributedSync`);
3. after each period evaluates on its part of the whole validation split, gathers predictions on rank 0 and
   computes the metrics there (AUC over the whole split, never a mean of per-rank AUCs), broadcasts them, and
   reports them with a checkpoint (:mod:`.checkpoint`); the best-by-validation state travels in it, and the
   stage stops by its :class:`~autosrh_ray.engine.training.StopRule` (patience on the validation loss, or the cap) —
   the search as well as the plain training stages.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import numpy as np
import torch

from ..config import config_from_dict
from ..data.prepared import EncodedSplit
from ..engine.allocator import keep_large_blocks
from ..engine.batch import Batch
from ..engine.metrics import task_metrics
from ..engine.model import EmbeddingModel
from ..engine.model_state import cpu_state
from ..engine.prune import pruned_state as prune
from ..engine.search import BiLevelSearch
from ..engine.training import StopRule, Trainer, predict, valid_prefixed
from ..methods.model import model_from_state
from . import checkpoint as ckpt, local_checkpoints
from .cache import Budget
from .feed import PeriodFeed
from .progress import RowsChannel
from .resources import set_torch_threads
from .sources import TRAIN, VALID, InMemorySource, RayDataSource, ShardSource, rows_per_pass
from .sync import TorchDistributedSync, all_gather_objects, all_min, broadcast_object, gather_objects, world


@dataclass(frozen=True)
class ModelShape:
    """What :func:`~autosrh_ray.methods.model.build_model` reads from the feature space."""

    num_features: int
    num_fields: int


@dataclass
class InMemoryData:
    """Ordered in-memory splits instead of Ray Data (deterministic order: equivalence tests, small runs)."""

    train: EncodedSplit
    valid: EncodedSplit
    shuffle: bool = False
    alpha: Optional[EncodedSplit] = None  # α's rows when they are not the validation split


@dataclass(frozen=True)
class FaultSpec:
    """Test hook: SIGKILL worker ``rank`` once, at ``step`` of ``epoch`` of ``phase`` (marker file = already
    fired)."""

    marker: str
    rank: int = 1
    epoch: int = 1
    step: int = 1
    phase: int = 0


@dataclass
class LoopSpec:
    """Everything a worker needs (pickled into ``train_loop_config``)."""

    stage: Literal["search", "fit", "pep"]
    config: dict
    shape: ModelShape
    label_mean: float
    init_state: Any  # a CPU state dict or an ObjectRef to one
    rule: StopRule  # evaluations ("epochs") between stops, patience, evaluation period
    global_batch: int
    torch_threads: int = 1
    use_gpu: bool = False
    memory: Optional[InMemoryData] = None
    train_rows: int = 0  # rows of the train split (the Ray Data source plans its per-rank cache from it)
    alpha_split_rows: int = 0  # rows of α's stream when known in advance (the validation split), else 0
    cache_bytes: int = 0  # per-worker memory for replaying splits (``ray.worker_cache_mb``)
    dtype: Literal["float32", "float64"] = "float32"
    check_replicas: bool = False
    fault: Optional[FaultSpec] = None
    rewrite_metrics: Optional[Callable[[int, dict], dict]] = None  # test hook: (evaluation, metrics) → metrics
    then: Optional["PruneThenRetrain"] = None  # after the first stage, prune and retrain in this same run
    rows: Optional[RowsChannel] = None  # rank 0 sends its rows done per evaluation period (live progress)


@dataclass(frozen=True)
class PruneThenRetrain:
    """The tail of a one-budget run or a study trial, in the same Train run as its first stage (one worker-group
    start-up instead of two): prune that stage's best state to ``keep`` entries, then retrain it until ``rule``
    stops."""

    keep: int
    rule: StopRule


def _materialise(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _source(spec: LoopSpec, rank: int, size: int, seed: int, device) -> ShardSource:
    if spec.global_batch % size:
        raise ValueError(f"train.batch_size: {spec.global_batch} is not divisible by ray.num_workers = {size}")
    if spec.memory is not None:
        m = spec.memory
        return InMemorySource(m.train, m.valid, spec.global_batch, rank, size, seed, m.shuffle, m.alpha)
    local = spec.global_batch // size
    # splits known to give each rank less than one full batch: their whole share is one batch from the start
    whole = {name for name, rows in ((TRAIN, spec.train_rows), (VALID, spec.alpha_split_rows))
             if 0 < rows // size < local}
    return RayDataSource(local, rank, seed, spec.shape.num_fields,
                         train_rows=rows_per_pass(spec.train_rows, spec.global_batch, size),
                         budget=Budget(spec.cache_bytes), agree=lambda ok: bool(all_min(int(ok), device)),
                         whole=whole, valid_share=_valid_share(spec.alpha_split_rows, size))


def _valid_share(alpha_split_rows: int, size: int) -> int:
    """Each rank's rows of α's validation stream when they are its exact part of the whole split (the equal
    split drops ``rows % size`` rows), else 0."""
    return alpha_split_rows // size if alpha_split_rows % size == 0 else 0


@torch.no_grad()
def evaluate_whole_split(model: EmbeddingModel, batches: Iterator[Batch], task: str, device, dtype) -> dict:
    """Metrics over the whole validation split: predictions gathered on rank 0, metrics broadcast to all ranks."""
    parts = gather_objects(predict(model, (b.to(device, dtype) for b in batches)))  # (outputs, labels)
    metrics = None
    if parts is not None:
        o = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        metrics = task_metrics(task, y, o)
        metrics["rows"] = int(len(y))
    return broadcast_object(metrics)


def _replica_diff(tensors: list[torch.Tensor]) -> float:
    """Max |difference| of ``tensors`` between rank 0 and every other rank (0.0 = bitwise identical)."""
    flat = torch.cat([t.detach().double().flatten().cpu() for t in tensors]) if tensors else torch.zeros(0)
    copies = all_gather_objects(flat)
    return max([float((c - copies[0]).abs().max()) if c.numel() else 0.0 for c in copies] + [0.0])


def _maybe_fault(spec: LoopSpec, rank: int, phase: int, epoch: int, step_in_epoch: int) -> None:
    f = spec.fault
    if (f and (rank, phase, epoch, step_in_epoch) == (f.rank, f.phase, f.epoch, f.step)
            and not os.path.exists(f.marker)):
        import ray.train

        ray.train.get_all_reported_checkpoints()  # the controller has registered the last checkpoint: determinism
        Path(f.marker).write_text(f"killed rank {rank} at epoch {epoch} step {step_in_epoch}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _report(state: ckpt.LoopState, rank: int, metrics: dict) -> None:
    """Write this epoch's checkpoint locally and report it; Ray uploads and hands it to the controller in its
    upload thread (ASYNC), so the loop goes on at once instead of waiting for the controller to take the previous
    report (it polls every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, see :mod:`.stages`). Reports stay in order,
    and the worker waits for pending uploads before it exits."""
    import ray.train

    directory = local_checkpoints.new_directory()
    ckpt.write(directory, rank, state if rank == 0 else None)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True)


def _flat_metrics(state: ckpt.LoopState, metrics: dict) -> dict:
    out = {"epoch": state.epoch, "step": state.step, "best_epoch": state.best.epoch, "phase": state.phase,
           "resumed_from_step": state.resumes[-1] if state.resumes else -1, **valid_prefixed(metrics)}
    first = state.searched
    if first is not None and state.epoch == 1:  # the retrain's first report says how the first phase ended
        out.update(first_stop_reason=first.stop_reason, first_epochs=first.epoch, first_steps=first.step,
                   first_seconds=first.seconds, first_best_epoch=first.best.epoch)
    return out


def _phase(spec: LoopSpec, index: int) -> tuple[str, StopRule]:
    """Phase ``index`` of the run: its own stage, then (with ``then``) the retrain after pruning."""
    return (spec.stage, spec.rule) if index == 0 else ("fit", spec.then.rule)


def _engine(kind: str, model: EmbeddingModel, config, sync):
    if kind == "search":
        s = config.search
        return BiLevelSearch(model, config.task, lr=config.train.lr, lr_alpha=s.lr_alpha,
                             alpha_optimizer=s.alpha_optimizer, order=s.order, xi=config.xi, hvp=s.hvp, sync=sync)
    return Trainer(model, config.task, config.train.lr, sync)


def pruned_state(config, shape: ModelShape, label_mean: float, state: dict, keep: int) -> dict:
    """``state`` pruned to its ``keep`` best entries by |E ⊙ α| (a CPU state dict, its embedding packed)."""

    return prune(model_from_state(config, shape, label_mean, state, retrain=False, share=True), keep)


def train_loop(loop_config: dict) -> None:
    """The Ray Train worker function (``train_loop_config={"spec": LoopSpec}``)."""
    import ray.train

    spec: LoopSpec = loop_config["spec"]
    rank, size = world()
    set_torch_threads(spec.torch_threads)
    keep_large_blocks()  # a step's batch-sized tensors stay in the heap: no page faults every step
    local_checkpoints.remove_orphans()  # what workers killed before their upload left on this node
    config = config_from_dict(spec.config)
    if not config.ray.verbose:  # Train's per-report INFO lines ("Checkpoint successfully created", …) off
        logging.getLogger("ray.train").setLevel(logging.WARNING)
    seed = config.train.seed
    device = ray.train.torch.get_device() if spec.use_gpu else torch.device("cpu")
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    sync = TorchDistributedSync()

    state, start, rng = ckpt.LoopState(), None, None
    torch.manual_seed(seed * 7919 + rank)
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state = ckpt.read_state(Path(d))
            rng = ckpt.read_rng(Path(d), rank)
        state.resumes.append(state.step)
    else:
        start = _materialise(spec.init_state)
    source = None
    while True:
        kind, rule = _phase(spec, state.phase)
        # AutoDim searches and retrains different embedding modules; a pruned state retrains packed
        model = model_from_state(config, spec.shape, spec.label_mean, start if start is not None else state.model,
                                 retrain=kind == "fit", dtype=dtype).to(device=device)
        engine = _engine(kind, model, config, sync)
        if start is None:
            engine.load_state_dict(state.optimizer)
            if rng is not None:
                ckpt.set_rng_state(rng)
        if state.stopped or state.epoch >= rule.max_epochs:  # already complete (a re-run): hand it back again
            if spec.then is None or state.phase == 1:
                last = state.history[-1] if state.history else {}
                _report(state, rank, {**_flat_metrics(state, last), "replayed": 1})
                return
        else:
            if restored is not None and rank == 0 and spec.rows is not None and state.history:
                spec.rows.resumed(state.phase, state.history, state.step)
            restored = None
            source = source or _source(spec, rank, size, seed, device)
            _run_phase(spec, kind, rule, state, model, engine, source, rank, size, device, dtype)
            if spec.then is None or state.phase == 1:
                return
        # prune the first stage's best state and retrain it in this same run (one Train start-up)
        start = pruned_state(config, spec.shape, spec.label_mean, state.best.state, spec.then.keep)
        searched = dataclasses.replace(state, model={}, optimizer=None)
        state = ckpt.LoopState(phase=1, searched=searched)


def _run_phase(spec: LoopSpec, kind: str, rule: StopRule, state: ckpt.LoopState, model: EmbeddingModel, engine,
               source: ShardSource, rank: int, size: int, device, dtype) -> None:
    """Evaluation periods of one stage until ``rule`` stops it, a report with a checkpoint after each."""
    task = config_from_dict(spec.config).task
    alpha_stream = source.valid_stream() if kind == "search" else None
    if alpha_stream is not None and state.step:
        # resumed: α's stream goes on where the checkpoint left it (one validation batch per search step), so α
        # sees the batches the uninterrupted run would have given it
        collections.deque(itertools.islice(alpha_stream, state.step), maxlen=0)
    feed = PeriodFeed(source, rule.eval_every_steps, state.data_epoch, state.position,
                      lambda ok: bool(all_min(ok, device)))
    while state.epoch < rule.max_epochs and not state.stopped:
        start = time.perf_counter()
        epoch = state.epoch
        losses, replica = [], 0.0
        ticker = spec.rows.ticker(epoch, state.phase) if spec.rows is not None and rank == 0 else None
        for batch in feed.period():
            _maybe_fault(spec, rank, state.phase, epoch, len(losses))
            batch = batch.to(device, dtype)
            if alpha_stream is not None:
                stats = engine.step(batch, next(alpha_stream).to(device, dtype))
                losses.append(stats.train_loss)
                if spec.check_replicas:
                    replica = max(replica, _replica_diff([model.alpha]))
            else:
                losses.append(engine.step(batch))
            state.step += 1
            if ticker is not None:
                ticker.tick(feed.samples * size)
        state.data_epoch, state.position = feed.data_epoch, feed.position
        train_seconds = time.perf_counter() - start
        metrics = evaluate_whole_split(model, source.eval_batches(), task, device, dtype)
        metrics["train_loss"] = float(np.mean(losses)) if losses else float("nan")
        metrics.update(train_seconds=train_seconds, train_samples=feed.samples * size, **feed.timings())
        if spec.check_replicas:
            metrics["replica_alpha_max_diff"] = replica
            metrics["replica_theta_max_diff"] = _replica_diff(list(model.theta_parameters()))
        if spec.rewrite_metrics is not None:
            metrics = spec.rewrite_metrics(state.epoch, metrics)
        _end_epoch(state, rule, model, engine, metrics, task)
        state.seconds += time.perf_counter() - start
        _report(state, rank, _flat_metrics(state, metrics))


def _end_epoch(state: ckpt.LoopState, rule: StopRule, model: EmbeddingModel, engine, metrics: dict,
               task: str) -> None:
    """Bookkeeping after an evaluation: history, best-by-validation, early stopping, the state to checkpoint."""
    state.history.append(metrics)
    state.best.update(state.epoch, metrics, task, model)
    state.epoch += 1
    reached = rule.reached(model)
    state.stopped = reached or rule.stops(state.best)
    if reached:
        state.stop_reason = "budget"  # PEP: this state is the one to prune (the executor hands it back)
    elif state.stopped:
        state.stop_reason = "patience"
    elif state.epoch >= rule.max_epochs:
        state.stop_reason = "max_epochs"
    state.model = cpu_state(model)
    state.optimizer = engine.state_dict()
