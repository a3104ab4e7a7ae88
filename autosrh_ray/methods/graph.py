"""The stage graph after prepare, the same whichever executor runs the training stages::

    autosrh:    search ──┬► prune |E ⊙ α| to budget 1 ──► [rewind] ──► retrain
                         └► prune … to budget 2 ─────► [rewind] ──► retrain      (side by side)
    magnitude:  uniform ─┬► prune |E| to each budget ─► [rewind] ──► retrain
    uniform:    uniform
    pep:        prune by learnable thresholds down to each budget ─► keep it by margin ─► rewind ─► retrain
    autodim, autoemb:  search (weights over candidate dims per field / from a popularity controller, bi-level)
                ──► argmax per field / per feature ──► retrain the selected dims from the initial embedding
                (one model, at the size the search chose)
    grid, random, mde:  dimensions fixed before training (engine/mixed_dims.py) ──► train each candidate from
                        the initial state with its mask (side by side) ──► per budget, the best by validation

The budgets are ``prune.cr``, ``prune.params`` and byte budgets (``prune.bytes_cr``, ``prune.bytes``: as many of
the best entries as fit, one candidate per precision; :func:`~autosrh_ray.artifact.budget.budgets`); a Ray Tune study
(:mod:`autosrh_ray.study`) may stand in for the search and hand over its best trial's searched state. Stages hand each
other CPU state dicts (:mod:`autosrh_ray.engine.model_state`). An executor (:class:`StageExecutor`) runs one
training stage to its stop rule (:class:`~autosrh_ray.engine.training.StopRule`) and prunes:
:class:`~.in_process.InProcessExecutor` (the engine's loops on in-memory splits: tests, benchmarks, small data) or
:class:`~autosrh_ray.distributed.stages.RayTrainExecutor` on Ray Train. Each method's fragment of the graph is its
:class:`~.registry.Method`'s ``run``. Every stage stops when the validation loss stops improving and ends at its
best evaluation's state.

``prune.retrain_from: rewound`` (an option past the paper; Alg. 4 retrains the searched values): the kept
embedding entries restart from their initial values and α is set to ones, so the mask alone selects (lottery-ticket
rewinding, Frankle & Carbin, ICLR 2019); θ and the first-order term keep their searched values.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch

from ..artifact.budget import Budget, budgets
from ..config import Config
from ..data.prepared import PreparedData
from ..engine.features import block_starts
from ..engine.model import EmbeddingModel
from ..engine.model_state import cpu_state
from ..engine.packed import quantisation_aware, with_kept_values_of
from ..engine.training import FitResult, StopRule
from ..logs import Log
from .model import build_model, model_from_state
from .registry import method_of

EMBEDDING = "embedding.embedding.weight"
ALPHA = "embedding.alpha"

# The config key that caps each training stage (named in the warning when a stage hits it).
CAP_KEYS = {"search": "search.max_epochs", "pep": "search.max_epochs", "uniform": "train.max_epochs",
            "retrain": "train.max_epochs"}


class StageExecutor(Protocol):
    """Runs the graph's training stages: :class:`~.in_process.InProcessExecutor` (this process, splits in memory)
    or :class:`~autosrh_ray.distributed.stages.RayTrainExecutor` (Ray Train)."""

    prepared: PreparedData

    def train(self, stage: str, state: dict, rule: StopRule, tag: str = "") -> tuple[FitResult, dict]:
        """Run ``stage`` (``search``: bi-level; ``uniform``/``retrain``: Θ only; ``pep``) from ``state`` until
        ``rule`` stops it; return what it did and its best state. ``tag`` tells runs of one stage apart (budgets)."""

    def prune(self, state: dict, keep: int) -> dict:
        """The state pruned to ``keep`` embedding entries (mask installed, α frozen)."""

    def search_then_retrain(self, state: dict, search_rule: StopRule, keep: int, retrain_rule: StopRule, tag: str,
                            first: str = "search", run: str = "trial"
                            ) -> Optional[tuple[tuple[FitResult, dict], tuple[FitResult, dict]]]:
        """Stage ``first``, pruning to ``keep`` and the retrain as one run (one start-up); ((first, its best
        state), (retrain, its state)), or None where this executor runs stages one at a time."""

    def summarised_live(self, stage: str) -> bool:
        """Whether ``stage``'s summary line is already on the screen (printed live as the retrain began)."""


@dataclass
class StageResult:
    """One final model: what each training stage did (in run order), seconds per stage, its budget."""

    model: Optional[EmbeddingModel]
    stages: dict[str, FitResult]
    timings: dict[str, float]
    budget: Optional[Budget] = None  # None for UE
    searched_alpha: Optional[torch.Tensor] = None  # α as the search left it (AutoSrh)
    pruned_valid: Optional[dict] = None  # validation metrics right after pruning (in-process runs only)
    candidates: Optional[list[dict]] = None  # grid/random/mde: every scheme trained for this budget
    block_dims: Optional[tuple[int, ...]] = None  # grid/random/mde: the chosen dimension of every block
    candidate_states: Optional[dict[str, dict]] = None  # grid: every K' model, each a point at its own size

    @property
    def search(self) -> Optional[FitResult]:
        """The stage before pruning (``search`` or magnitude's ``uniform``); None for UE."""
        return next(iter(self.stages.values())) if len(self.stages) > 1 else None

    @property
    def retrain(self) -> FitResult:
        """The final training stage (``retrain``, or ``uniform`` for UE)."""
        return list(self.stages.values())[-1]


def rewound(pruned: dict, initial: dict) -> dict:
    """``prune.retrain_from: rewound``: kept embedding entries back to their initial values, α to ones."""
    out = with_kept_values_of(pruned, initial[EMBEDDING])
    if ALPHA in out:
        out[ALPHA] = torch.ones_like(out[ALPHA])
    return out


_NOT_SHOWN = ("rows", "train_loss", "train_seconds", "train_samples", "data_wait_seconds", "first_batch_seconds",
              "end_of_stream_seconds")


def epoch_line(stage: str, epoch: int, metrics: dict) -> str:
    """The log line of one evaluation: validation metrics, training loss, time and rows/s of the period."""
    parts = [f"valid {k}={v:.5f}" for k, v in metrics.items() if k not in _NOT_SHOWN and not k.startswith("replica")]
    if "train_loss" in metrics:
        parts.append(f"train loss={metrics['train_loss']:.5f}")
    seconds = metrics.get("train_seconds")
    if seconds:
        rate = f", {metrics['train_samples'] / seconds:,.0f} rows/s" if metrics.get("train_samples") else ""
        parts.append(f"{seconds:.1f} s{rate}")
    return f"[{stage}] epoch {epoch}: " + ", ".join(parts)


def cap_warning(stage: str, result: FitResult, name: str = "") -> Optional[str]:
    """The warning for a stage that stopped at its cap instead of by patience, naming the key to raise (and the
    run, ``name``: ``retrain cr10``)."""
    if result.stop_reason != "max_epochs":
        return None
    key = CAP_KEYS[stage]
    return (f"warning: [{name or stage}] stopped at its cap {key} = {result.epochs} before the validation loss "
            f"stopped improving (best at evaluation {result.best_epoch}); raise {key}")


def train_stage(executor: StageExecutor, config: Config, stage: str, state: dict, log: Log,
                tag: str = "", rule: Optional[StopRule] = None) -> tuple[FitResult, dict]:
    """One training stage by its stop rule (the stage's own unless ``rule``), with its summary line (and a warning
    if it hit its cap)."""
    result, state = executor.train(stage, state, rule or StopRule.for_stage(config, stage), tag)
    stage_summary(stage, result, log, tag)
    return result, state


def summary_line(name: str, stop_reason: str, epochs: int, steps: int, seconds: float, best_epoch: int) -> str:
    """``[name] stopped by patience after N evaluations (S steps, T s); best at evaluation B``."""
    return (f"[{name}] stopped by {stop_reason} after {epochs} evaluations ({steps} steps, {seconds:.1f} s); "
            f"best at evaluation {best_epoch}")


def stage_summary(stage: str, result: FitResult, log: Log, tag: str = "") -> None:
    """``[stage] stopped by … after N evaluations …``, and a warning if the stage hit its cap."""
    name = f"{stage} {tag}".strip()
    log(summary_line(name, result.stop_reason, result.epochs, result.steps, result.seconds, result.best_epoch))
    warning = cap_warning(stage, result, name)
    if warning:
        log(warning)


def side_by_side(work: Callable, items: list, parallel: int) -> list:
    """``[work(item) for item in items]``, ``parallel`` at a time (budgets' retrains, candidates)."""
    if parallel <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(work, items))


def first_stage(config: Config) -> Optional[str]:
    """The method's first training stage: ``search`` (AutoSrh, AutoDim, AutoEmb), ``uniform`` (UE, magnitude), or
    None (fixed schemes train as retrains)."""
    return method_of(config.search.method).first_stage


def run_graph(config: Config, executor: StageExecutor, initial: dict, log: Log = print,
              searched: Optional[tuple[FitResult, dict]] = None, parallel: int = 1) -> list[tuple[dict, StageResult]]:
    """Run the stage graph for ``search.method`` from ``initial`` (or from an already ``searched`` result, e.g. a
    study's best trial): one (final state, :class:`StageResult`) per budget, ``parallel`` retrains at a time.
    The results' ``model`` is left None for the caller to build."""
    return method_of(config.search.method).run(config, executor, initial, log, searched, parallel)


def run_uniform(config: Config, executor: StageExecutor, initial: dict, log: Log,
                searched: Optional[tuple[FitResult, dict]], parallel: int) -> list[tuple[dict, StageResult]]:
    """UE: one uniform model trained until the validation loss stops improving."""
    result, state = train_stage(executor, config, "uniform", initial, log)
    return [(state, StageResult(None, {"uniform": result}, {"search": 0.0, "prune": 0.0, "retrain": result.seconds}))]


def run_pruned(config: Config, executor: StageExecutor, initial: dict, log: Log,
               searched: Optional[tuple[FitResult, dict]], parallel: int) -> list[tuple[dict, StageResult]]:
    """The first stage (the search, or UE for magnitude pruning), then per budget: prune its best state by the
    method's scores, [rewind], retrain (``parallel`` budgets side by side)."""
    stage = first_stage(config)
    todo = run_budgets(config, initial[EMBEDDING])
    # one budget: the first stage, pruning and the retrain in one run (one start-up; Ray Train); not for a byte
    # budget (its kept entries depend on the searched scores), nor where Θ's search streams only its share of
    # train (alpha_data: train) while the retrain needs all of it
    streams_share = stage == "search" and config.search.alpha_data == "train"
    quantised = config.prune.quant_aware and any(b.precision != "fp32" for b in todo)  # set between the runs
    if searched is None and len(todo) == 1 and todo[0].bytes is None \
            and config.prune.retrain_from != "rewound" and not streams_share and not quantised:
        budget = todo[0]
        chained = executor.search_then_retrain(
            initial, StopRule.for_stage(config, stage), budget.kept, StopRule.for_stage(config, "retrain"),
            budget.tag, first=stage, run=f"{stage}-then-retrain-{budget.tag}")
        if chained is not None:
            (first, first_state), (retrain, state) = chained
            if not executor.summarised_live(stage):  # else printed as the retrain began
                stage_summary(stage, first, log)
            stage_summary("retrain", retrain, log, budget.tag)
            timings = {"search": first.seconds, "prune": 0.0, "retrain": retrain.seconds}  # pruning: in the run
            return [(state, StageResult(None, {stage: first, "retrain": retrain}, timings, budget,
                                        first_state.get(ALPHA)))]
    search_result, searched_state = searched or train_stage(executor, config, stage, initial, log)
    todo = resolved_budgets(config, executor, searched_state, todo)

    def finish(budget: Budget) -> tuple[dict, StageResult]:
        start = time.perf_counter()
        state = executor.prune(searched_state, budget.kept)
        if config.prune.retrain_from == "rewound":
            state = rewound(state, initial)
        state = quantised_for(config, state, budget)
        pruning = time.perf_counter() - start
        retrain, state = train_stage(executor, config, "retrain", state, log, budget.tag)
        timings = {"search": search_result.seconds, "prune": pruning, "retrain": retrain.seconds}
        return state, StageResult(None, {stage: search_result, "retrain": retrain}, timings, budget,
                                  searched_state.get(ALPHA))

    return side_by_side(finish, todo, parallel)


def resolved_budgets(config: Config, executor: StageExecutor, searched_state: dict,
                     todo: list[Budget]) -> list[Budget]:
    """Byte budgets with their kept entries: as many of the searched state's best entries (by its pruning scores:
    |E ⊙ α|, |E|, PEP's margin) as fit each candidate's bytes; other budgets as they are."""
    if all(b.bytes is None for b in todo):
        return todo
    prepared = executor.prepared
    scores = model_from_state(config, prepared.features, prepared.label_mean, searched_state, retrain=False,
                              share=True).embedding.pruning_scores()
    return distinct_candidates([b.resolved(scores) for b in todo])


def quantised_for(config: Config, state: dict, budget: Budget) -> dict:
    """``prune.quant_aware``: the retrain's forward reads the kept values at the budget's precision."""
    if config.prune.quant_aware and budget.precision != "fp32":
        return quantisation_aware(state, budget.precision, budget.block_starts, budget.int_scales)
    return state


def distinct_candidates(todo: list[Budget]) -> list[Budget]:
    """A byte budget's candidates without repeats: a per-block candidate that chose one precision for every block
    (or the same plan as another) would retrain the same model again."""
    seen, out = set(), []
    for b in todo:
        key = (b.group, b.precision, b.int_scales) if b.group else (b.name,)
        if key not in seen:
            seen.add(key)
            out.append(b)
    return out


def run_budgets(config: Config, weight: torch.Tensor) -> list[Budget]:
    """The run's budgets for an (M, K) table, with the search's frequency blocks (a precision per block)."""
    m, k = weight.shape
    return budgets(config.prune, m, k, block_starts(m, config.search.L, config.search.block_boundaries))


def initial_state(config: Config, prepared: PreparedData) -> dict:
    """The model's initial state for ``train.seed`` (the same in-process and on Ray)."""
    torch.manual_seed(config.train.seed)
    return cpu_state(build_model(config, prepared.features, prepared.label_mean))


def built(config: Config, prepared: PreparedData, results: list[tuple[dict, StageResult]]) -> list[StageResult]:
    """The graph's results with their models built from the final states."""
    for state, result in results:
        result.model = model_from_state(config, prepared.features, prepared.label_mean, state)
    return [result for _, result in results]
