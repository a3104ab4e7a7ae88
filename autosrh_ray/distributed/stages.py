"""search → prune → retrain on Ray Train: the distributed counterpart of :func:`autosrh_ray.workflow.run_stages`.

Each training stage is one ``TorchTrainer`` run named ``<run.name>-<stage>`` under ``ray.storage_path``;
re-running with the same two resumes every stage from its latest checkpoint (a finished stage hands its result
straight back). Pruning runs once, as a Ray task, between the two Train runs.

``ray.storage_path`` defaults to ``<output>/ray_results`` (or a fresh temporary directory without ``output``);
``run.name`` defaults to ``<method>-<hash of the config without the ray/run sections and the data>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..config import Config, ConfigError
from ..data.prepared import PreparedData
from ..models import build_model
from ..prune import prune
from ..training import FitResult
from ..workflow import StageResult
from . import checkpoint as ckpt
from .loops import FaultSpec, InMemoryData, LoopSpec, ModelShape, train_loop
from ..runtime import connect
from .resources import ResourcePlan, cluster_cpus, data_execution_options, describe, plan_resources
from .sources import loop_data_config, train_datasets

Log = Callable[[str], None]


@dataclass
class LoopOptions:
    """Knobs for tests and benchmarks (the workflow uses the defaults)."""

    memory: Optional[InMemoryData] = None  # ordered in-memory splits instead of Ray Data
    dtype: str = "float32"
    check_replicas: bool = False  # gather α (every step) and Θ (every epoch) from all ranks and record the diff
    fault: Optional[FaultSpec] = None


def default_run_name(config: Config, prepared: PreparedData) -> str:
    """Deterministic: the method and a hash of everything that shapes the result (not ray/run)."""
    d = config.to_dict()
    d.pop("ray"), d.pop("run")
    digest = hashlib.sha256(json.dumps([d, prepared.config_hash], sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.search.method}-{digest}"


def storage_path(config: Config, output: Optional[str | Path]) -> str:
    if config.ray.storage_path:
        return str(Path(config.ray.storage_path).expanduser().resolve())
    if output is not None:
        return str((Path(output) / "ray_results").resolve())
    return tempfile.mkdtemp(prefix="autosrh-ray-")


def fit_result(state: ckpt.LoopState, seconds: float) -> FitResult:
    return FitResult(epochs=state.epoch, steps=state.step, best_epoch=state.best_epoch,
                     best_valid=dict(state.best_valid), history=list(state.history), seconds=seconds)


def _prune_task(config_dict: dict, shape: ModelShape, label_mean: float, state: dict, cr: float) -> dict:
    from ..config import config_from_dict

    model = build_model(config_from_dict(config_dict), shape, label_mean)
    ckpt.load_model_state(model, state)
    prune(model.embedding, cr)
    return ckpt.cpu_state(model)


@dataclass
class StageRunner:
    """Runs one ``TorchTrainer`` per stage with a shared resource plan, storage and run name."""

    config: Config
    prepared: PreparedData
    plan: ResourcePlan
    storage: str
    name: str
    options: LoopOptions

    @property
    def shape(self) -> ModelShape:
        f = self.prepared.features
        return ModelShape(f.num_features, f.num_fields)

    def run(self, stage: str, kind: str, init_state: dict, epochs: int, patience: Optional[int]) -> ckpt.LoopState:
        """One Train run; returns the final :class:`~.checkpoint.LoopState` read from its last checkpoint."""
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        o = self.options
        spec = LoopSpec(stage=kind, config=self.config.to_dict(), shape=self.shape,
                        label_mean=self.prepared.label_mean, init_state=ray.put(init_state), epochs=epochs,
                        patience=patience, global_batch=self.config.train.batch_size,
                        torch_threads=self.plan.torch_threads, use_gpu=self.plan.use_gpu, memory=o.memory,
                        train_rows=self.prepared.rows.train, cache_bytes=self.config.ray.worker_cache_mb << 20,
                        dtype=o.dtype, check_replicas=o.check_replicas, fault=o.fault)
        train = self.config.train
        datasets = (None if o.memory is not None else
                    train_datasets(self.prepared, kind == "search", train.shuffle_window, train.seed))
        trainer = TorchTrainer(
            train_loop, train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(num_workers=self.plan.num_workers, use_gpu=self.plan.use_gpu,
                                         resources_per_worker=self.plan.resources_per_worker()),
            run_config=RunConfig(name=f"{self.name}-{stage}", storage_path=self.storage,
                                 failure_config=FailureConfig(max_failures=self.config.ray.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
            datasets=datasets,
            dataset_config=loop_data_config(data_execution_options(self.plan)) if datasets else None,
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError(f"Train run {self.name}-{stage} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            return ckpt.read_state(Path(d))

    def prune(self, state: dict) -> dict:
        """Pruning once, as a Ray task, between the two Train runs."""
        import ray

        task = ray.remote(num_cpus=min(1.0, self.plan.data_cpus))(_prune_task)
        return ray.get(task.remote(self.config.to_dict(), self.shape, self.prepared.label_mean, state,
                                   self.config.prune.cr))


# Ray Train's controller takes one report per worker per poll, every 2 s by default: with sub-second epochs that
# bounded every run at 2 s per epoch (quickstart retrain 35 s -> 22 s at 0.5 s). Ray propagates this variable
# from the driver to the controller; a value the user set is kept.
POLL_ENV, POLL_SECONDS = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def make_runner(config: Config, prepared: PreparedData, output: Optional[str | Path] = None,
                options: Optional[LoopOptions] = None) -> StageRunner:
    """Attach to / start Ray, plan resources (one-line ConfigError if they cannot fit), name the runs."""
    os.environ.setdefault(POLL_ENV, POLL_SECONDS)
    connect(config.ray)
    plan = plan_resources(config.ray, cluster_cpus())
    if config.train.batch_size % plan.num_workers:
        raise ConfigError("train.batch_size", f"must be divisible by ray.num_workers = {plan.num_workers} "
                                              f"(got {config.train.batch_size})")
    rows, b = prepared.rows, config.train.batch_size
    needed = {"train": rows.train, "valid": rows.valid} if config.search.method == "autosrh" else {"train": rows.train}
    for split, n in needed.items():
        if n < b:
            raise ConfigError("train.batch_size", f"{b} is more than the {split} split's {n} rows "
                                                  f"(every step needs one full {split} batch)")
    name = config.run.name or default_run_name(config, prepared)
    return StageRunner(config, prepared, plan, storage_path(config, output), name, options or LoopOptions())


def run_stages_distributed(config: Config, prepared: PreparedData, log: Log = print,
                           output: Optional[str | Path] = None,
                           options: Optional[LoopOptions] = None) -> StageResult:
    """Search (or UE training), prune and retrain on Ray Train; same :class:`StageResult` as ``run_stages``."""
    runner = make_runner(config, prepared, output, options)
    log(f"ray train: {describe(runner.plan, cluster_cpus())}; runs {runner.storage}/{runner.name}-*")
    torch.manual_seed(config.train.seed)
    model = build_model(config, prepared.features, prepared.label_mean)
    tc, method = config.train, config.search.method
    timings = {"search": 0.0, "prune": 0.0, "retrain": 0.0}

    def stage(name: str, kind: str, init: dict, epochs: int, patience: Optional[int]) -> tuple[FitResult, dict]:
        start = time.perf_counter()
        state = runner.run(name, kind, init, epochs, patience)
        seconds = time.perf_counter() - start
        for epoch, m in enumerate(state.history):
            log(f"[{name}] epoch {epoch}: " + ", ".join(f"{k}={v:.5f}" for k, v in m.items()))
        final = state.best_model if (patience is not None and state.best_model is not None) else state.model
        return fit_result(state, seconds), final

    search_result = None
    current = ckpt.cpu_state(model)
    if method == "autosrh":
        search_result, current = stage("search", "search", current, config.search.epochs, None)
    elif method == "magnitude":
        search_result, current = stage("uniform", "fit", current, tc.max_epochs, tc.patience)
    if search_result is not None:
        timings["search"] = search_result.seconds
        start = time.perf_counter()
        current = runner.prune(current)
        timings["prune"] = time.perf_counter() - start
    retrain, current = stage("retrain" if method != "uniform" else "uniform", "fit", current, tc.max_epochs,
                             tc.patience)
    timings["retrain"] = retrain.seconds
    ckpt.load_model_state(model, current)
    return StageResult(model, search_result, retrain, timings)

