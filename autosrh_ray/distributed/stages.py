"""The stage graph (:mod:`autosrh_ray.methods.graph`) on Ray Train: :class:`RayTrainExecutor` runs each training stage
as one ``TorchTrainer`` run named ``<run.name>-<stage>`` under ``ray.storage_path``; re-running with the same two
resumes every stage from its latest checkpoint (a finished stage hands its result straight back). Pruning runs
once, as a Ray task, between the two Train runs — except with one budget (and in a study trial), where the first
stage, pruning and the retrain are one Train run (:meth:`RayTrainExecutor.search_then_retrain`: one start-up).

``ray.storage_path`` defaults to ``<output>/ray_results`` (or a fresh temporary directory without ``output``);
``run.name`` defaults to ``<method>-<hash of the config without the ray/run sections and the data>``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import storage as storage_module
from ..config import Config, ConfigError, budget_choice_rows, config_from_dict
from ..data.prepared import PreparedData
from ..data.split import in_alpha_slice
from ..engine.training import FitResult, StopRule
from ..logs import Log
from ..methods.graph import StageResult, built, epoch_line, initial_state, run_graph
from ..methods.registry import method_of
from ..runtime import connect
from ..supervise import doing
from . import checkpoint as ckpt
from .cache import RowCache
from .loops import FaultSpec, InMemoryData, LoopSpec, ModelShape, PruneThenRetrain, pruned_state, train_loop
from .progress import LiveLines
from .resources import ResourcePlan, cluster_cpus, data_execution_options, describe, plan_resources
from .sources import loop_data_config, train_datasets

STAGE_FILE = "stage.pt"  # a finished stage's FitResult and best state, beside its Train run's checkpoints


def run_name(stage: str, tag: str = "") -> str:
    """A stage's run name: ``retrain-cr10`` for a tagged stage, else the stage."""
    return f"{stage}-{tag}" if tag else stage


def stage_path(storage: str, name: str, run: str) -> str:
    """Where run ``run`` of the runs named ``name`` keeps its finished stage (``<storage>/<name>-<run>/stage.pt``)."""
    return storage_module.join(storage, f"{name}-{run}", STAGE_FILE)


@dataclass
class LoopOptions:
    """Knobs for tests and benchmarks (the workflow uses the defaults)."""

    memory: Optional[InMemoryData] = None  # ordered in-memory splits instead of Ray Data
    dtype: str = "float32"
    check_replicas: bool = False  # gather α (every step) and Θ (every epoch) from all ranks and record the diff
    fault: Optional[FaultSpec] = None
    rewrite_metrics: Optional[Callable[[int, dict], dict]] = None  # e.g. scripted validation losses


def default_run_name(config: Config, prepared: PreparedData) -> str:
    """Deterministic: the method and a hash of everything that shapes its training stages — not ray/run, the
    study or the report, not the budgets (each budget's retrain is a run of its own, tagged by budget) and not how
    the artifact stores the values (``prune.precision``: after training)."""
    d = config.to_dict()
    for section in ("ray", "run", "tune", "report"):
        d.pop(section)
    d["prune"].pop("cr"), d["prune"].pop("params"), d["prune"].pop("precision")
    digest = hashlib.sha256(json.dumps([d, prepared.config_hash], sort_keys=True).encode()).hexdigest()[:12]
    return f"{config.search.method}-{digest}"


def storage_path(config: Config, output: Optional[str | Path]) -> str:
    """Where Train runs (and a study) keep their checkpoints: ``ray.storage_path``, else ``<output>/ray_results``
    (a local path or a URI)."""
    if config.ray.storage_path:
        return storage_module.absolute(config.ray.storage_path)
    if output is not None:
        return storage_module.join(storage_module.absolute(output), "ray_results")
    return tempfile.mkdtemp(prefix="autosrh-ray-")


def save_stage(path: str, result: FitResult, state: dict) -> None:
    """A finished stage's result and best state as ``stage.pt`` (whole or not at all, local or remote)."""
    buffer = io.BytesIO()
    torch.save((result, state), buffer)
    storage_module.write_bytes(path, buffer.getvalue())


def load_stage(path: str) -> tuple[FitResult, dict]:
    """What :func:`save_stage` wrote."""
    result, state = torch.load(io.BytesIO(storage_module.read_bytes(path)), weights_only=False)
    return result, state


def fit_result(state: ckpt.LoopState, seconds: float) -> FitResult:
    return FitResult(epochs=state.epoch, steps=state.step, best_epoch=state.best.epoch,
                     best_valid=dict(state.best.metrics), history=list(state.history), seconds=seconds,
                     stop_reason=state.stop_reason, loop_seconds=state.seconds)


def _prune_task(config_dict: dict, shape: ModelShape, label_mean: float, state: dict, keep: int) -> dict:
    return pruned_state(config_from_dict(config_dict), shape, label_mean, state, keep)


def _split_rows(memory: InMemoryData, fraction: float, seed: int) -> InMemoryData:
    """In-memory data for a search with ``search.alpha_data: train``: Θ's rows and α's slice of train."""
    inside = in_alpha_slice(memory.train.ids, fraction, seed)
    return InMemoryData(memory.train.rows(~inside), memory.valid, memory.shuffle, alpha=memory.train.rows(inside))


def _held_from_alpha(memory: InMemoryData, fraction: float, seed: int) -> InMemoryData:
    """In-memory data for a search whose α leaves out the validation rows a byte budget's model is chosen on."""
    held = in_alpha_slice(memory.valid.ids, fraction, seed)
    return InMemoryData(memory.train, memory.valid, memory.shuffle, alpha=memory.valid.rows(~held))


@dataclass
class RayTrainExecutor:
    """Runs one ``TorchTrainer`` per stage with a shared resource plan, storage and run name."""

    config: Config
    prepared: PreparedData
    plan: ResourcePlan
    storage: str
    name: str
    options: LoopOptions
    log: Log = print
    callbacks: tuple = ()  # Ray Train callbacks for every run (a study trial's TuneReportCallback)
    live: Optional[LiveLines] = None  # epoch lines printed while each run goes (else after it ends)

    @property
    def shape(self) -> ModelShape:
        f = self.prepared.features
        return ModelShape(f.num_features, f.num_fields)

    def run(self, stage: str, kind: str, init_state: dict, rule: StopRule, callbacks: tuple = (),
            then: Optional[PruneThenRetrain] = None, labels: tuple[str, ...] = ()) -> ckpt.LoopState:
        """One Train run named ``<run.name>-<stage>``; returns the final :class:`~.checkpoint.LoopState` read from
        its last checkpoint. ``callbacks``: Ray Train callbacks (a study's ``TuneReportCallback``); ``then``:
        pruning and a retrain after the first stage, in the same run; ``labels``: how log lines name each phase
        (default: the run's stage, then ``retrain``)."""
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        labels = labels or (_label(stage), *(["retrain"] if then else []))
        doing(f"[{labels[0]}] (Train run {self.name}-{stage})")
        o, train, search = self.options, self.config.train, self.config.search
        alpha_rows = search.alpha_data if kind == "search" else None
        periods = (self._period_rows(rule, alpha_rows), *([self._period_rows(then.rule, None)] if then else []))
        alpha_slice = (search.alpha_fraction, train.seed)
        memory = o.memory
        held = budget_choice_rows(self.config) if alpha_rows == "validation" else None
        if memory is not None and alpha_rows == "train":
            memory = _split_rows(memory, *alpha_slice)
        elif memory is not None and held:
            memory = _held_from_alpha(memory, *held)
        spec = LoopSpec(stage=kind, config=self.config.to_dict(), shape=self.shape,
                        label_mean=self.prepared.label_mean, init_state=ray.put(init_state), rule=rule,
                        global_batch=train.batch_size, torch_threads=self.plan.torch_threads,
                        use_gpu=self.plan.use_gpu, memory=memory,
                        # Θ's share of train under alpha_data: train is not known in advance: stream it each pass
                        train_rows=0 if alpha_rows == "train" else self.prepared.rows.train,
                        # α's rows known in advance: the whole validation split (not with rows held from it)
                        alpha_split_rows=self.prepared.rows.valid if alpha_rows == "validation" and not held else 0,
                        cache_bytes=self.config.ray.worker_cache_mb << 20,
                        dtype=o.dtype, check_replicas=o.check_replicas, fault=o.fault,
                        rewrite_metrics=o.rewrite_metrics, then=then,
                        rows=self.live.rows_channel(labels, periods) if self.live else None)
        datasets = (None if memory is not None else
                    train_datasets(self.prepared, alpha_rows, train.shuffle_window, train.seed, alpha_slice,
                                   self.plan.data_task_cpus, held))
        trainer = TorchTrainer(
            train_loop, train_loop_config={"spec": spec},
            scaling_config=ScalingConfig(num_workers=self.plan.num_workers, use_gpu=self.plan.use_gpu,
                                         resources_per_worker=self.plan.resources_per_worker()),
            run_config=RunConfig(name=f"{self.name}-{stage}", storage_path=self.storage,
                                 failure_config=FailureConfig(max_failures=self.config.ray.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 callbacks=[*callbacks, *([self.live.callback(*labels)] if self.live else [])]),
            datasets=datasets,
            # blocks in order: the same rows in the same order run to run (reproducible metrics)
            dataset_config=(loop_data_config(data_execution_options(self.plan, preserve_order=True),
                                             local=self._kept_after_first_pass(spec)) if datasets else None),
        )
        result = trainer.fit()
        if self.live is not None:
            self.live.flush()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError(f"Train run {self.name}-{stage} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            return ckpt.read_state(Path(d))

    def summarised_live(self, stage: str) -> bool:
        """Whether ``stage``'s summary line was printed as the retrain after it began (a one-budget run)."""
        return self.live is not None and stage in self.live.summarised

    def _kept_after_first_pass(self, spec: LoopSpec) -> bool:
        """Whether a single worker keeps its train rows after the first pass (the worker cache holds them), so
        its datasets can be iterated in the worker itself (:func:`~.sources.loop_data_config`)."""
        rows = spec.train_rows  # 0 when not known in advance (α's slice of train): streamed every pass
        return (self.plan.num_workers == 1 and rows > 0
                and RowCache.nbytes(rows, self.shape.num_fields) <= spec.cache_bytes)

    def _period_rows(self, rule: StopRule, alpha_rows: Optional[str]) -> int:
        """Training rows between two evaluations (for progress): a pass over Θ's rows, or eval_every_steps."""
        if rule.eval_every_steps:
            return rule.eval_every_steps * self.config.train.batch_size
        rows = self.prepared.rows.train
        return int(rows * (1 - self.config.search.alpha_fraction)) if alpha_rows == "train" else rows

    def _run_dir(self, run: str) -> str:
        return storage_module.join(self.storage, f"{self.name}-{run}")

    def _reused(self, run: str) -> Optional[tuple[FitResult, dict]]:
        done = stage_path(self.storage, self.name, run)
        if not storage_module.is_file(done):
            return None
        self.log(f"[{_label(run)}] finished in an earlier run: reused {self._run_dir(run)}")
        return load_stage(done)

    def _finish(self, run: str, stage: str, final: ckpt.LoopState, seconds: float) -> tuple[FitResult, dict]:
        """The stage's result and best state, saved as ``<run>/stage.pt`` for later re-runs (and its epoch lines,
        unless they were printed live)."""
        for epoch, metrics in enumerate(final.history if self.live is None else []):
            self.log(epoch_line(_label(run), epoch, metrics))
        result = fit_result(final, seconds)
        stopped_at_budget = final.stop_reason == "budget"  # PEP: the state that reached the budget
        best = final.model if stopped_at_budget or final.best.state is None else final.best.state
        save_stage(stage_path(self.storage, self.name, run), result, best)
        return result, best

    def train(self, stage: str, state: dict, rule: StopRule, tag: str = "") -> tuple[FitResult, dict]:
        """A training stage of the graph (:class:`~autosrh_ray.methods.graph.StageExecutor`): one Train run; its
        best-by-validation state. A stage that finished before (same run name, same storage) is handed back
        from its ``stage.pt`` without starting Ray Train."""
        run = run_name(stage, tag)
        reused = self._reused(run)
        if reused is not None:
            return reused
        start = time.perf_counter()
        final = self.run(run, stage if stage in ("search", "pep") else "fit", state, rule, self.callbacks)
        return self._finish(run, stage, final, time.perf_counter() - start)

    def search_then_retrain(self, state: dict, search_rule: StopRule, keep: int, retrain_rule: StopRule,
                            tag: str, first: str = "search",
                            run: str = "trial") -> tuple[tuple[FitResult, dict], tuple[FitResult, dict]]:
        """Stage ``first`` (the search, or UE for magnitude pruning), pruning of its best state to ``keep`` entries
        and a retrain in one Train run named ``<name>-<run>`` (one start-up instead of two: a study trial, a
        one-budget run). Its stages are saved (and reused) as the separate stages ``<first>`` and
        ``retrain-<tag>`` would be; ((first, its best state), (retrain, retrained state)). A first stage that
        finished in an earlier run is reused and only the retrain runs."""
        done, retrain = self._reused(first), self._reused(f"retrain-{tag}")
        if done is not None:
            return done, retrain or self.train("retrain", self.prune(done[1], keep), retrain_rule, tag)
        start = time.perf_counter()
        kind = "search" if first == "search" else "fit"
        final = self.run(run, kind, state, search_rule, self.callbacks, PruneThenRetrain(keep, retrain_rule),
                         (first, _label(f"retrain-{tag}")))
        seconds = time.perf_counter() - start
        ended = final.searched
        share = ended.seconds / max(ended.seconds + final.seconds, 1e-9)  # start-up split by loop time
        return (self._finish(first, first, ended, seconds * share),
                self._finish(f"retrain-{tag}", "retrain", final, seconds * (1 - share)))

    def prune(self, state: dict, keep: int) -> dict:
        """Pruning to ``keep`` entries between the two Train runs: in this process for a small table (a task's
        process start costs more than the pruning), else as a Ray task (the driver never holds the scores)."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self.shape.num_features * self.config.search.K <= PRUNE_HERE_ENTRIES:
            return pruned_state(self.config, self.shape, self.prepared.label_mean, state, keep)

        # Outside any placement group: inside a Tune trial, a child task would otherwise be captured by the
        # trial's own (tiny) placement group and could never be scheduled.
        task = ray.remote(num_cpus=self.plan.data_task_cpus)(_prune_task).options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        return ray.get(task.remote(self.config.to_dict(), self.shape, self.prepared.label_mean, state, keep))


# Ray Train's controller takes one report per worker per poll, every 2 s by default: with sub-second epochs that
# bounds every run at 2 s per epoch, and it also waits a poll to see the worker group start and finish. Ray
# propagates this variable from the driver to the controller; a value the user set is kept.
POLL_ENV, POLL_SECONDS = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"
PRUNE_HERE_ENTRIES = 1 << 24  # M·K up to which the driver prunes itself (64 MiB of float32 scores)


def check_batch_against_splits(config: Config, prepared: PreparedData, workers: int, log: Log = print) -> None:
    """What a Train run needs of ``train.batch_size`` and the splits' rows, once they are known (after prepare).

    A split smaller than one batch is fine: each worker uses its whole (equal) share as one smaller batch
    (:mod:`.sources`), said here in one line. Only a split with fewer rows than workers cannot give every worker
    a batch. (That the batch splits evenly across the workers is a config check, before prepare.)"""
    b = config.train.batch_size
    rows = prepared.rows
    streams = {"train split": rows.train}
    if method_of(config.search.method).bi_level:  # α's stream: valid, or ~alpha_fraction of train
        s = config.search
        if s.alpha_data == "validation":
            streams["valid split"] = rows.valid
        else:  # its exact size is known only as it streams: a short slice is used whole there
            streams["α slice of train"] = int(rows.train * s.alpha_fraction)
    for split, n in streams.items():
        if n < workers:
            raise ConfigError("ray.num_workers", f"the {split} has {n} rows, fewer than the {workers} workers "
                                                 "(each needs at least one row); lower ray.num_workers")
        if n < b:
            share, about = n // workers, "about " if split.startswith("α") else ""
            log(f"note: the {split} has {about}{n} rows, fewer than train.batch_size = {b}: its batches hold "
                f"{about}{share * workers} rows" + (f" ({share} per worker)" if workers > 1 else ""))


def make_runner(config: Config, prepared: PreparedData, output: Optional[str | Path] = None,
                options: Optional[LoopOptions] = None, log: Log = print, storage: Optional[str] = None,
                name: Optional[str] = None, cpus: Optional[float] = None, callbacks: tuple = (),
                live: Optional[LiveLines] = None) -> RayTrainExecutor:
    """Attach to / start Ray, plan resources (one-line ConfigError if they cannot fit), name the runs.

    ``storage``/``name`` override the run storage and name (a study trial's), ``cpus`` the CPUs the plan may
    use (a trial's share of the cluster), ``callbacks`` go to every Train run, ``live`` prints their epoch lines
    as they come."""
    os.environ.setdefault(POLL_ENV, POLL_SECONDS)
    connect(config.ray)
    plan = plan_resources(config.ray, cpus if cpus is not None else cluster_cpus())
    check_batch_against_splits(config, prepared, plan.num_workers, log)
    name = name or config.run.name or default_run_name(config, prepared)
    return RayTrainExecutor(config, prepared, plan, storage or storage_path(config, output), name,
                            options or LoopOptions(), log, callbacks, live)


def run_on_ray_train(config: Config, prepared: PreparedData, log: Log = print, output: Optional[str | Path] = None,
                     options: Optional[LoopOptions] = None, searched: Optional[tuple[FitResult, dict]] = None,
                     name: Optional[str] = None) -> list[StageResult]:
    """The stage graph with every training stage on Ray Train: one :class:`StageResult` per budget (as
    in-process); the budgets' retrains run side by side as far as the cluster's CPUs hold them. ``searched``:
    a search already done (a study's best trial), ``name``: its runs' name prefix."""
    connect(config.ray)
    live = LiveLines(log)
    try:
        runner = make_runner(config, prepared, output, options, log, name=name, live=live)
        cpus = cluster_cpus()
        parallel = runner.plan.side_by_side(cpus)
        log(f"ray train: {describe(runner.plan, cpus)}; runs {runner.storage}/{runner.name}-*")
        results = run_graph(config, runner, initial_state(config, prepared), log, searched, parallel)
    finally:
        live.close()
    return built(config, prepared, results)


def _label(run: str) -> str:
    """A Train run's stage as its log lines name it: ``retrain-cr10`` → ``retrain cr10``."""
    stage, _, tag = run.partition("-")
    return f"{stage} {tag}".strip()
