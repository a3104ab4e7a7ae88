"""A Ray Tune study of the search (``tune.enabled``): sweep ``tune.search_space`` (block count L, base dimension K,
learning rates …), score every trial at the same absolute size, hand the best trial's searched state on.

Each trial is a driver function (Train V2's pattern) that runs one Ray Train run with ``TuneReportCallback``:
1. the search, reporting the soft model's validation metric after every evaluation (``valid_<metric>``);
2. in the same run (one worker-group start-up per trial), pruning of the search's best state to the study
   budget — the same number of kept entries for every trial, whatever its K
   (:func:`~autosrh_ray.artifact.budget.study_budget`) — and a brief retrain (``tune.retrain_epochs``, ``train.patience``),
   reporting the pruned model's validation metric; its best is the trial's score.

With ``ray.num_workers: 0`` (small data) a trial instead runs the engine's loops in its own Tune actor on the
splits in memory (:class:`InProcessTrial`), a search then pruning and the retrain, with a whole CPU per trial and
no Train start-up.

The scheduler (ASHA by default) compares trials on what they reported at the same iteration, so it may stop a
trial during its search on the soft model's metric; only finished trials have a score at the budget, and the
best of those is chosen. Trials run as many at a time as the cluster's CPUs hold (one at a time on 2 CPUs): the
trial's own actor takes a hundredth of a CPU, its Train workers and Ray Data the rest of the trial's share.

Trials are printed as they report (:class:`TrialWatch`); a trial that reports nothing for ``ray.stall_timeout_s``
is stopped and marked ``stalled`` (its line says what the cluster waited for), and the study goes on.

Re-running the same study (same config, same storage) restores it: finished trials are not run again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from . import storage as storage_module
from .artifact.budget import study_budget
from .config import Config, config_from_dict, with_overrides
from .data.prepared import PreparedData
from .distributed.orphan_groups import OrphanSweeper
from .distributed.resources import cluster_cpus
from .distributed.stages import STAGE_FILE, load_stage, make_runner, run_name, save_stage, stage_path
from .distributed.trial_watch import FINISHED, TrialWatch, trial_key
from .engine.training import FitResult, StopRule, valid_prefixed
from .logs import Log
from .methods.graph import initial_state
from .methods.in_process import InProcessExecutor
from .supervise import doing

TRIAL_CPU = 0.01  # the trial's own actor only waits on its Train runs (Tune needs a non-empty request)
SEARCH_RUN = "search_run"
STUDY_TAG = "study"  # a trial's retrain stage: retrain-study


@dataclass
class Trial:
    """One trial of the study, as the report lists it."""

    overrides: dict
    score: Optional[float]
    epochs: int  # evaluations of its search
    stop_reason: str  # patience | max_epochs (its search) | scheduler (stopped early) | error | stalled
    seconds: float
    last: Optional[float] = None  # the last metric it reported (a stopped trial's: its soft model's)
    search_run: Optional[str] = None  # storage directory of its search Train run
    fixed_seconds: Optional[float] = None  # its time outside the training loops (Train start-up, pruning …)

    def to_json(self) -> dict:
        return {"config": self.overrides, "score": self.score, "epochs": self.epochs,
                "stop_reason": self.stop_reason, "seconds": self.seconds, "last_reported": self.last,
                "fixed_seconds": self.fixed_seconds}


@dataclass
class StudyResult:
    trials: list[Trial]
    best: Trial
    best_config: Config
    searched: tuple[FitResult, dict]  # the best trial's search: what it did and its best (α, Θ) state
    metric: str  # the reported metric name, e.g. valid_logloss
    mode: str  # min | max
    budget: int  # kept entries every trial was pruned to
    seconds: float
    directory: str  # the Tune experiment (TensorBoard event files per trial)

    def to_json(self) -> dict:
        return {"metric": self.metric, "mode": self.mode, "budget": self.budget, "seconds": self.seconds,
                "directory": self.directory, "trials": [t.to_json() for t in self.trials],
                "best": self.best.to_json()}


def metric_name(config: Config) -> tuple[str, str]:
    """The reported metric and its mode for ``tune.metric``."""
    metric = config.tune.metric
    if metric == "loss":
        metric = "logloss" if config.task == "classification" else "mse"
    return f"valid_{metric}", "max" if metric == "auc" else "min"


def study_name(config: Config, prepared: PreparedData) -> str:
    """Deterministic: a hash of everything that shapes the study (not ray/run/report)."""
    d = config.to_dict()
    for section in ("ray", "run", "report"):
        d.pop(section)
    digest = hashlib.sha256(json.dumps([d, prepared.config_hash], sort_keys=True).encode()).hexdigest()[:12]
    return f"study-{digest}"


def param_space(config: Config) -> dict:
    """``tune.search_space`` as Tune's param space: lists are grid axes (``grid``) or choices (``random``)."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, spec in config.tune.search_space.items():
        if isinstance(spec, dict):
            (dist, (low, high)), = spec.items()
            space[key] = getattr(tune, dist)(low, high)
        elif config.tune.search_alg == "grid":
            space[key] = tune.grid_search(spec)
        else:
            space[key] = tune.choice(spec)
    return space


def trial_stages(config: Config, prepared: PreparedData, runner, budget: int,
                 separate: bool = False) -> tuple[FitResult, FitResult, int]:
    """What a trial trains: the search, then pruning to ``budget`` (at most M·K) and a brief retrain
    (``tune.retrain_epochs``, stopped earlier by ``train.patience``); (search, retrain, kept entries).

    All three in one Train run (one start-up), unless ``separate`` or ``search.alpha_data: train`` (its search
    streams only Θ's share of train, the retrain needs all of it): then as the workflow runs them, a search Train
    run, a pruning task and a retrain Train run."""

    keep = min(budget, prepared.num_features * config.search.K)
    search_rule = StopRule.for_stage(config, "search")
    rule = StopRule(config.tune.retrain_epochs, config.train.patience, config.train.eval_every_steps)
    if separate or config.search.alpha_data == "train":
        search, searched = runner.train("search", initial_state(config, prepared), search_rule)
        retrain, _ = runner.train("retrain", runner.prune(searched, keep), rule, tag=STUDY_TAG)
    else:
        (search, _), (retrain, _) = runner.search_then_retrain(initial_state(config, prepared), search_rule, keep,
                                                               rule, STUDY_TAG)
    return search, retrain, keep


def run_trial(trial_config: dict, *, base: dict, prepared_dir: str, storage: str, study: str, budget: int,
              cpus: float) -> None:
    """One trial (runs in Tune's trial actor): :func:`trial_stages` with every evaluation reported to Tune.
    ``cpus``: the trial's share of the cluster its Train runs plan on (in process: its own CPUs, torch threads)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback


    overrides = dict(trial_config)
    config = with_overrides(config_from_dict(base), overrides)
    prepared = PreparedData.load(prepared_dir)
    name = f"{study}-t{trial_key(overrides)}"
    start = time.perf_counter()
    if config.ray.num_workers == 0:
        runner = InProcessTrial(config, prepared, storage, name, threads=max(1, int(cpus)))
    else:
        runner = make_runner(config, prepared, log=lambda _: None, storage=storage, name=name, cpus=cpus,
                             callbacks=(TuneReportCallback(),))
    search, retrain, keep = trial_stages(config, prepared, runner, budget, separate=config.ray.num_workers == 0)
    metric, _ = metric_name(config)
    seconds = time.perf_counter() - start
    tune.report({metric: retrain.best_valid[metric.removeprefix("valid_")], FINISHED: 1,
                 "search_epochs": search.epochs, "search_stop": search.stop_reason, "kept": keep,
                 SEARCH_RUN: storage_module.join(storage, f"{name}-search"), "trial_seconds": seconds,
                 # Train start-up, pruning and reporting: the trial's time outside its training loops
                 "fixed_seconds": seconds - search.loop_seconds - retrain.loop_seconds})


class InProcessTrial:
    """A trial's stages in its own Tune actor (``ray.num_workers: 0``): the engine's loops on the splits in memory,
    every evaluation reported to Tune. Each finished stage is saved as ``<storage>/<trial>-<stage>/stage.pt``, as
    the Ray Train runner saves it, so a restored study reuses it and the workflow finishes from the best trial's
    search."""

    def __init__(self, config: Config, prepared: PreparedData, storage: str, name: str, threads: int):
        import torch


        torch.set_num_threads(threads)
        self.storage, self.name = storage, name
        self.executor = InProcessExecutor(config, prepared, prepared.load_split("train"),
                                          prepared.load_split("valid"), log=lambda _: None, on_epoch=_report_epoch)

    def train(self, stage: str, state: dict, rule: StopRule, tag: str = "") -> tuple[FitResult, dict]:
        path = stage_path(self.storage, self.name, run_name(stage, tag))
        if storage_module.is_file(path):
            return load_stage(path)
        result, best = self.executor.train(stage, state, rule)
        save_stage(path, result, best)
        return result, best

    def prune(self, state: dict, keep: int) -> dict:
        return self.executor.prune(state, keep)


def _report_epoch(stage: str, epoch: int, metrics: dict) -> None:
    """An in-process trial's evaluation, reported to Tune under the names a Train run reports."""
    from ray import tune


    tune.report({"epoch": epoch + 1, **valid_prefixed(metrics)})


def trial_cpus(config: Config) -> float:
    """CPUs a trial's own actor asks for: a whole CPU (or ``ray.cpus_per_worker``) when it trains in process,
    else a hundredth (it only waits on its Train runs)."""
    return (config.ray.cpus_per_worker or 1.0) if config.ray.num_workers == 0 else TRIAL_CPU


def concurrency(config: Config, cluster_cpus: float) -> int:
    """Trials at a time: ``tune.max_concurrent_trials``, else as many as the cluster's CPUs hold with a whole CPU
    per worker and one for Ray Data (one at a time on 2 CPUs). A trial plans its Train runs on its share of the
    CPUs, fractional if need be (two trials at a time on 2 CPUs fit without deadlock)."""
    if config.tune.max_concurrent_trials:
        return config.tune.max_concurrent_trials
    r = config.ray
    if r.num_workers == 0:
        return max(1, int(cluster_cpus // trial_cpus(config)))
    return max(1, int(cluster_cpus // (r.num_workers * (r.cpus_per_worker or 1.0) + (r.data_cpus or 1.0))))


def best_trial(trials: list[Trial], mode: str) -> Trial:
    """The finished trial with the best score (``mode``: min or max); the earlier one on a tie."""
    finished = [t for t in trials if t.score is not None]
    if not finished:
        raise ValueError("no finished trial")
    return (min if mode == "min" else max)(finished, key=lambda t: t.score)


def _searched(run_dir: str) -> tuple[FitResult, dict]:
    """The best trial's search: what it did and its best (α, Θ) state, as its run saved them."""

    path = storage_module.join(run_dir, STAGE_FILE)
    if not storage_module.is_file(path):
        raise RuntimeError(f"the best trial's search left no {STAGE_FILE} under {run_dir}")
    return load_stage(path)


def run_study(config: Config, prepared: PreparedData, storage: str, log: Log = print) -> StudyResult:
    """Run (or restore) the study; the best finished trial's config and searched state."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


    start = time.perf_counter()
    name = study_name(config, prepared)
    metric, mode = metric_name(config)
    budget = study_budget(config.prune, prepared.num_features, config.search.K)
    cpus = cluster_cpus()
    parallel = concurrency(config, cpus)
    own = trial_cpus(config)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=config.to_dict(), prepared_dir=str(prepared.directory),
                             storage=storage, study=name, budget=budget,
                             cpus=own if config.ray.num_workers == 0 else cpus / parallel - own),
        {"CPU": own})
    max_t = config.search.max_epochs + config.tune.retrain_epochs + 1
    scheduler = (ASHAScheduler(max_t=max_t, grace_period=config.tune.grace_period,
                               reduction_factor=config.tune.reduction_factor)
                 if config.tune.scheduler == "asha" else FIFOScheduler())
    path = storage_module.join(storage, name)
    # trial lines as they come; stalled trials stopped; what Train runs of stopped trials left behind removed
    sweeper = OrphanSweeper(log, spare=[{"CPU": own}]) if config.ray.num_workers > 0 else None
    watch = TrialWatch(metric, config.ray.stall_timeout_s, log, sweeper)
    doing(f"the study {name} (its trials)")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the workflow prints one line per trial; Tune stays quiet
    if tune.Tuner.can_restore(path):
        log(f"study: resuming {path} (finished trials are not run again)")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True)
    else:
        log(f"study: {name}, {parallel} trial(s) at a time, every trial pruned to {budget} kept entries")
        tuner = tune.Tuner(
            trainable, param_space=param_space(config),
            # not reuse_actors: a function trainable cannot be reset after the scheduler stops it (Tune 2.60 then
            # fails to start the next trial)
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler,
                                        num_samples=config.tune.num_samples, max_concurrent_trials=parallel),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback(),
                                                 watch]))
    grid = tuner.fit()
    if sweeper is not None:
        sweeper.sweep_after()  # the final stages need every CPU the trials had
    trials = [_trial(result, metric, watch.stalled) for result in grid]
    if not any(t.score is not None for t in trials):
        raise RuntimeError(f"no trial of the study finished (see {path})")
    best = best_trial(trials, mode)
    for t in trials:
        score = "–" if t.score is None else f"{t.score:.5f}"
        log(f"study: trial {t.overrides} → {metric} {score} ({t.stop_reason}, {t.epochs} search evaluations, "
            f"{t.seconds:.0f} s){'  ← best' if t is best else ''}")
    return StudyResult(trials, best, with_overrides(config, best.overrides), _searched(best.search_run), metric,
                       mode, budget, time.perf_counter() - start, path)


def _trial(result, metric: str, stalled: dict[str, str]) -> Trial:
    """A Tune result as a :class:`Trial` (stopped by the scheduler when it never reported its final score;
    ``stalled``: the trials :class:`TrialWatch` stopped, by key)."""
    m = result.metrics or {}
    overrides = dict(result.config or {})
    seconds = float(m.get("time_total_s", 0.0))
    last = float(m[metric]) if metric in m else None
    if result.error is not None:
        reason = "stalled" if trial_key(overrides) in stalled else "error"
        return Trial(overrides, None, int(m.get("epoch", 0)), reason, seconds, last)
    if m.get(FINISHED):
        return Trial(overrides, float(m[metric]), int(m["search_epochs"]), str(m["search_stop"]),
                     float(m["trial_seconds"]), last, m[SEARCH_RUN], float(m["fixed_seconds"]))
    return Trial(overrides, None, int(m.get("epoch", 0)), "scheduler", seconds, last)
