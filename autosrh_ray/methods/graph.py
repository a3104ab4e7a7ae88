"""The stage graph after prepare, the same whichever executor runs the training stages::

    autosrh:    search ──┬► prune |E ⊙ α| to budget 1 ──► [rewind] ──► retrain
                         └► prune … to budget 2 ─────► [rewind] ──► retrain      (side by side)
    magnitude:  uniform ─┬► prune |E| to each budget ─► [rewind] ──► retrain
    uniform:    uniform
    pep:        prune by learnable thresholds down to each budget ─► keep it by margin ─► rewind ─► retrain
    autodim, autoemb:  search (weights over candidate dims per field / from a popularity controller, bi-level)
                ──► argmax per field / per feature ──► retrain the selected dims from the initial embedding
                (one model, at the size the search chose)
    grid, random, mde:  dimensions fixed before training (:mod:`.mixed_dims`) ──► train each candidate from the
                        initial state with its mask (side by side) ──► per budget, the best by validation

The budgets are ``prune.cr``, ``prune.params`` and byte budgets (``prune.bytes_cr``, ``prune.bytes``: as many of
the best entries as fit, one candidate per precision; :func:`~.prune.budgets`); a Ray Tune study
(:mod:`.study`) may stand in for the search and hand over its best trial's searched state. Stages hand each
other CPU state dicts (:mod:`.model_state`). An executor runs one training stage to its stop rule
(:class:`~.training.StopRule`) and prunes: :class:`InProcessExecutor` here (the engine's loops on in-memory
splits: tests, benchmarks, small data), :class:`~.distributed.stages.RayTrainExecutor` on Ray Train. Every stage
stops when the validation loss stops improving and ends at its best evaluation's state.

``prune.retrain_from: rewound`` (an option past the paper; Alg. 4 retrains the searched values): the kept
embedding entries restart from their initial values and α is set to ones, so the mask alone selects (lottery-ticket
rewinding, Frankle & Carbin, ICLR 2019); θ and the first-order term keep their searched values.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Optional, Protocol

import numpy as np
import torch

from ..engine.batch import iterate_batches
from ..config import Config, budget_choice_rows
from ..data.prepared import EncodedSplit, PreparedData
from ..data.split import in_alpha_slice
from ..engine.metrics import validation_loss
from ..engine.model_state import cpu_state, model_from_state
from ..engine.models import EmbeddingModel, build_model
from ..engine.mixed_dims import DimsCandidate, candidate, capped_dims, first_dims_mask, mde_block_dims, random_block_dims
from ..engine.packed import kept_of, packed_state, quantisation_aware, with_kept_values_of
from ..engine.prune import MIXED_CANDIDATES, Budget, budgets, pruned_state
from ..engine.search import BiLevelSearch
from ..engine.training import EpochBatches, FitResult, StopRule, evaluate, fit, search

Log = Callable[[str], None]
EMBEDDING = "embedding.embedding.weight"
ALPHA = "embedding.alpha"

# The config key that caps each training stage (named in the warning when a stage hits it).
CAP_KEYS = {"search": "search.max_epochs", "pep": "search.max_epochs", "uniform": "train.max_epochs",
            "retrain": "train.max_epochs"}


class StageExecutor(Protocol):
    def train(self, stage: str, state: dict, rule: StopRule, tag: str = "") -> tuple[FitResult, dict]:
        """Run ``stage`` (``search``: bi-level; ``uniform``/``retrain``: Θ only) from ``state`` until ``rule``
        stops it; return what it did and its best state. ``tag`` tells runs of one stage apart (budgets)."""

    def prune(self, state: dict, keep: int) -> dict:
        """The state pruned to ``keep`` embedding entries (mask installed, α frozen)."""


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


def first_stage(config: Config) -> str:
    """``search`` for AutoSrh, AutoDim and AutoEmb; ``uniform`` for UE and magnitude pruning."""
    return "search" if config.search.method in ("autosrh", "autodim", "autoemb") else "uniform"


def run_graph(config: Config, executor: StageExecutor, initial: dict, log: Log = print,
              searched: Optional[tuple[FitResult, dict]] = None, parallel: int = 1) -> list[tuple[dict, StageResult]]:
    """Run the stage graph for ``search.method`` from ``initial`` (or from an already ``searched`` result, e.g. a
    study's best trial): one (final state, :class:`StageResult`) per budget, ``parallel`` retrains at a time.
    The results' ``model`` is left None for the caller to build."""
    if config.search.method == "uniform":
        result, state = train_stage(executor, config, "uniform", initial, log)
        return [(state, StageResult(None, {"uniform": result}, {"search": 0.0, "prune": 0.0,
                                                                  "retrain": result.seconds}))]
    if config.search.method in FIXED_DIMS:
        return run_fixed_dims(config, executor, initial, log, parallel)
    if config.search.method in SEARCHED_DIMS:
        return run_searched_dims(config, executor, initial, log, searched)
    if config.search.method == "pep":
        return run_pep(config, executor, initial, log, parallel)
    stage = first_stage(config)
    chained = getattr(executor, "search_then_retrain", None)
    todo = run_budgets(config, initial[EMBEDDING])
    # one budget: the first stage, pruning and the retrain in one run (one start-up; Ray Train); not for a byte
    # budget (its kept entries depend on the searched scores), nor where Θ's search streams only its share of
    # train (alpha_data: train) while the retrain needs all of it
    streams_share = stage == "search" and config.search.alpha_data == "train"
    quantised = config.prune.quant_aware and any(b.precision != "fp32" for b in todo)  # set between the runs
    if searched is None and chained is not None and len(todo) == 1 and todo[0].bytes is None \
            and config.prune.retrain_from != "rewound" and not streams_share and not quantised:
        budget = todo[0]
        (first, first_state), (retrain, state) = chained(
            initial, StopRule.for_stage(config, stage), budget.kept, StopRule.for_stage(config, "retrain"),
            budget.tag, first=stage, run=f"{stage}-then-retrain-{budget.tag}")
        if not getattr(executor, "summarised_live", lambda _: False)(stage):  # else printed as the retrain began
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
        return quantisation_aware(state, budget.precision, budget.block_starts)
    return state


def distinct_candidates(todo: list[Budget]) -> list[Budget]:
    """A byte budget's candidates without repeats: a per-block candidate that chose one precision for every block
    (or the same plan as another) would retrain the same model again."""
    seen, out = set(), []
    for b in todo:
        key = (b.group, b.precision) if b.group else (b.name,)
        if key not in seen:
            seen.add(key)
            out.append(b)
    return out


def run_budgets(config: Config, weight: torch.Tensor) -> list[Budget]:
    """The run's budgets for an (M, K) table, with the search's frequency blocks (a precision per block)."""
    from ..engine.features import block_starts

    m, k = weight.shape
    return budgets(config.prune, m, k, block_starts(m, config.search.L, config.search.block_boundaries))


FIXED_DIMS = ("grid", "random", "mde")


SEARCHED_DIMS = ("autodim", "autoemb")


def run_pep(config: Config, executor: StageExecutor, initial: dict, log: Log,
            parallel: int) -> list[tuple[dict, StageResult]]:
    """PEP, per budget: prune with learnable thresholds until the kept entries reach the budget (or patience),
    keep exactly the budget by margin, retrain from the initial values under that mask. A byte budget is one
    pruning run down to its largest candidate (the lowest precision keeps the most entries; estimated on the
    initial |E|), then each candidate keeps as many entries as fit its bytes by margin and is retrained."""
    weight = initial[EMBEDDING]
    runs: dict[str, list[Budget]] = {}
    for b in run_budgets(config, weight):
        runs.setdefault(b.group or b.name, []).append(b)

    def prune_then_retrain(members: list[Budget]) -> list[tuple[dict, StageResult]]:
        target = max(b.resolved(weight.abs()).kept for b in members)
        rule = replace(StopRule.for_stage(config, "pep"), kept_at_most=target)
        tag = members[0].group or members[0].tag
        pep, pruning = train_stage(executor, config, "pep", initial, log, tag, rule)
        start = time.perf_counter()
        members = resolved_budgets(config, executor, pruning, members)
        resolving = time.perf_counter() - start

        def finish(budget: Budget) -> tuple[dict, StageResult]:
            start = time.perf_counter()
            state = quantised_for(config, rewound(executor.prune(pruning, budget.kept), initial), budget)
            selection = resolving + time.perf_counter() - start
            retrain, state = train_stage(executor, config, "retrain", state, log, budget.tag)
            timings = {"search": pep.seconds, "prune": selection, "retrain": retrain.seconds}
            return state, StageResult(None, {"pep": pep, "retrain": retrain}, timings, budget)

        return side_by_side(finish, members, parallel if len(runs) == 1 else 1)

    return [r for rs in side_by_side(prune_then_retrain, list(runs.values()), parallel) for r in rs]


def searched_dims_state(config: Config, prepared: PreparedData, searched: dict,
                        initial: dict) -> tuple[dict, list[int]]:
    """AutoDim's / AutoEmb's selection and the retrain model's state: each feature keeps the first d dimensions of
    its choice (AutoDim: its field's argmax candidate; AutoEmb: the argmax of its controller's weights), E and θ
    come from the initial state, the projections start fresh (identity), one per field (AutoDim) or per chosen
    candidate (AutoEmb, as ``block_of``). Returns the state and the chosen dims (per field, or per candidate:
    how many features chose it)."""
    s = config.search
    fresh = cpu_state(build_model(config, prepared.features, prepared.label_mean, retrain=True))
    state = {k: initial.get(k, v) if k not in ("embedding.projection", "embedding.block_of") else v
             for k, v in fresh.items()}
    if s.method == "autodim":
        from ..engine.autodim import candidate_dims, feature_dims, selected_field_dims

        dims = selected_field_dims(searched[ALPHA], candidate_dims(s.K, s.autodim_candidates))
        per_feature = feature_dims(dims, prepared.features.field_of)
    else:
        from ..engine.autoemb import candidate_dims, selected_candidates

        cands = candidate_dims(s.K, s.autoemb_candidates)
        chosen = selected_candidates(searched[ALPHA], searched["embedding.popularity"], len(cands))
        state["embedding.block_of"] = chosen
        per_feature = np.asarray(cands)[chosen.numpy()]
        dims = [int((chosen == n).sum()) for n in range(len(cands))]
    return with_dims(state, first_dims_mask(per_feature, s.K)), dims


def run_searched_dims(config: Config, executor: StageExecutor, initial: dict, log: Log,
                      searched: Optional[tuple[FitResult, dict]]) -> list[tuple[dict, StageResult]]:
    """AutoDim / AutoEmb: search, select the dimensions, retrain; one model at the size the search chose."""
    search_result, searched_state = searched or train_stage(executor, config, "search", initial, log)
    start = time.perf_counter()
    state, dims = searched_dims_state(config, executor.prepared, searched_state, initial)
    selection = time.perf_counter() - start
    method = config.search.method
    if method == "autodim":
        log(f"[autodim] dimension per field: {dict(zip((f.name for f in executor.prepared.features.fields), dims))}")
    else:
        from ..engine.autoemb import candidate_dims

        log(f"[autoemb] features per chosen dimension: "
            f"{dict(zip(candidate_dims(config.search.K, config.search.autoemb_candidates), dims))}")
    kept = kept_of(state)
    budget = Budget("searched", kept, executor.prepared.num_features * config.search.K / kept)
    retrain, state = train_stage(executor, config, "retrain", state, log, method)
    timings = {"search": search_result.seconds, "prune": selection, "retrain": retrain.seconds}
    return [(state, StageResult(None, {"search": search_result, "retrain": retrain}, timings, budget,
                                searched_state.get(ALPHA), block_dims=tuple(dims)))]


def dims_candidates(config: Config, features, budget: Budget) -> list[DimsCandidate]:
    """The schemes ``search.method`` trains for ``budget`` (grid's do not depend on it). Random and MDE scale
    their block dimensions to the budget's kept entries — for a byte budget, to the most whose artifact fits its
    bytes at its precision (MDE's projections included)."""
    from ..artifact.budget import largest_within
    from ..engine.features import block_index

    s, m = config.search, features.num_features
    if s.method == "grid":
        one = np.zeros(m, dtype=np.int64)
        return [candidate(f"K{k}", np.array([k]), one) for k in capped_dims(s.grid_K, s.K)]
    block_of = block_index(m, s.L, s.block_boundaries)
    key = budget.kept if budget.bytes is None else budget.bytes

    def scheme(kept: int, trial: int) -> np.ndarray:
        if s.method == "mde":
            return mde_block_dims(features.frequencies, block_of, s.L, s.K, kept, s.mde_temperature)
        return random_block_dims(block_of, s.L, s.K, kept, np.random.default_rng([config.train.seed, trial, key]))

    out = []
    for trial in range(1 if s.method == "mde" else s.random_trials):
        kept = budget.kept
        if budget.bytes is not None:
            size = scheme_size(config, budget)
            kept = largest_within(lambda n: size(scheme(n, trial)[block_of]), budget.bytes, m * s.K)
        name = f"mde-{budget.tag}" if s.method == "mde" else f"random{trial}-{budget.tag}"
        out.append(candidate(name, scheme(kept, trial), block_of))
    return out


def scheme_size(config: Config, budget: Budget) -> Callable[[np.ndarray], int]:
    """A fixed scheme's artifact embedding bytes (from every feature's dims) at ``budget``'s precision, MDE's
    per-block projections included."""
    from ..artifact.budget import scheme_bytes

    s = config.search
    projections = s.L if s.method == "mde" else 0
    return lambda feature_dims: scheme_bytes(feature_dims, s.K, budget.precision, budget.block_starts, projections)


def scheme_fits(config: Config, cand: DimsCandidate, budget: Budget) -> bool:
    """Whether a trained scheme meets ``budget``: its kept entries, or its artifact's bytes at the precision."""
    if budget.bytes is None:
        return cand.kept <= budget.kept
    return scheme_size(config, budget)(cand.feature_dims) <= budget.bytes


def with_dims(state: dict, mask: torch.Tensor) -> dict:
    """The initial state packed to a fixed scheme's kept entries (``mask``, M×K)."""
    return packed_state(state, mask)


def run_fixed_dims(config: Config, executor: StageExecutor, initial: dict, log: Log,
                   parallel: int) -> list[tuple[dict, StageResult]]:
    """grid / random / mde: train every candidate scheme from the initial state with its mask (a ``retrain``
    stage each, side by side), then per budget keep the best by validation loss. Selection time (the candidates
    not kept) is reported as the search."""
    weight = initial[EMBEDDING]
    # a byte budget's candidates at each precision (the per-block ones follow searched dims: not for fixed schemes)
    todo = [b for b in run_budgets(config, weight) if b.precision not in MIXED_CANDIDATES]
    features = executor.prepared.features
    per_budget = {b.name: dims_candidates(config, features, b) for b in todo}
    unique = {c.name: c for cands in per_budget.values() for c in cands}

    def train(cand: DimsCandidate) -> tuple[FitResult, dict]:
        return train_stage(executor, config, "retrain", with_dims(initial, first_dims_mask(cand.feature_dims,
                                                                                       weight.shape[1])), log,
                           cand.name)

    names = list(unique)
    trained = dict(zip(names, side_by_side(lambda n: train(unique[n]), names, parallel)))
    out = []
    for budget in todo:
        cands = per_budget[budget.name]
        fitting = [c for c in cands if scheme_fits(config, c, budget)]
        fits = {c.name for c in fitting}
        if not fitting:
            fitting = [min(cands, key=lambda c: c.kept)]
            log(f"[{config.search.method}] {budget.name}: no scheme fits the budget (every block keeps at least one "
                f"dimension); the smallest, {fitting[0].name}, stands for it")
        best = min(fitting, key=lambda c: validation_loss(config.task, trained[c.name][0].best_valid))
        if budget.bytes is not None:  # the byte budget as met: the chosen scheme's entries
            budget = replace(budget, kept=best.kept, cr=weight.numel() / best.kept)
        result, state = trained[best.name]
        rows = [{"name": c.name, "block_dims": list(c.block_dims), "kept": c.kept,
                 "valid_loss": validation_loss(config.task, trained[c.name][0].best_valid),
                 "seconds": trained[c.name][0].seconds, "within_budget": c.name in fits,
                 "chosen": c is best} for c in cands]
        selection = sum(trained[c.name][0].seconds for c in cands if c is not best)
        timings = {"search": selection, "prune": 0.0, "retrain": result.seconds}
        states = {c.name: trained[c.name][1] for c in cands} if config.search.method == "grid" else None
        out.append((state, StageResult(None, {"retrain": result}, timings, budget, None, candidates=rows,
                                       block_dims=best.block_dims, candidate_states=states)))
    return out


def epoch_loader(config: Config, split: EncodedSplit, shuffle: bool, salt: int) -> EpochBatches:
    """Batches of an in-memory split per epoch, shuffled from (train.seed, salt, epoch)."""
    bs, seed = config.train.batch_size, config.train.seed
    return lambda epoch: iterate_batches(split, bs, shuffle=shuffle, seed=seed * 1_000_003 + salt * 1009 + epoch)


class InProcessExecutor:
    """The engine's loops in this process on in-memory splits (deterministic for a given ``train.seed``)."""

    def __init__(self, config: Config, prepared: PreparedData, train: EncodedSplit, valid: EncodedSplit,
                 log: Log = print, evaluate_pruned: bool = False,
                 on_epoch: Optional[Callable[[str, int, dict], None]] = None):
        """``on_epoch(stage, evaluation, metrics)`` after every evaluation (a study trial reports to Tune)."""
        self.config, self.prepared, self.log, self.on_epoch = config, prepared, log, on_epoch
        self.evaluate_pruned = evaluate_pruned
        self.pruned_valid: dict[int, dict] = {}  # kept entries → validation metrics right after pruning
        self.train_batches = epoch_loader(config, train, True, 1)
        self.valid_eval = epoch_loader(config, valid, False, 0)
        s = config.search
        if s.alpha_data == "train":  # α from a hashed slice of train that Θ's search steps never see
            in_slice = in_alpha_slice(train.ids, s.alpha_fraction, config.train.seed)
            self.search_batches = epoch_loader(config, train.rows(~in_slice), True, 1)
            self.alpha_batches = epoch_loader(config, train.rows(in_slice), True, 2)
        else:
            self.search_batches = self.train_batches
            held = budget_choice_rows(config)  # validation rows a byte budget's model is chosen on
            alpha = valid if held is None else valid.rows(~in_alpha_slice(valid.ids, *held))
            self.alpha_batches = epoch_loader(config, alpha, True, 2)

    def _model(self, state: dict, retrain: bool = True, share: bool = False) -> EmbeddingModel:
        return model_from_state(self.config, self.prepared.features, self.prepared.label_mean, state, retrain, share)

    def _epoch_log(self, stage: str, tag: str = "") -> Callable[[int, dict], None]:
        label = f"{stage} {tag}".strip()  # the budget too, as the Ray path's lines say it: [retrain cr10]

        def after(epoch: int, metrics: dict) -> None:
            self.log(epoch_line(label, epoch, metrics))
            if self.on_epoch:
                self.on_epoch(stage, epoch, metrics)
        return after

    def train(self, stage: str, state: dict, rule: StopRule, tag: str = "") -> tuple[FitResult, dict]:
        config, model = self.config, self._model(state, retrain=stage not in ("search", "pep"))
        task, tc, s = config.task, config.train, config.search
        if stage == "search":
            searcher = BiLevelSearch(model, task, lr=tc.lr, lr_alpha=s.lr_alpha, alpha_optimizer=s.alpha_optimizer,
                                     order=s.order, xi=config.xi, hvp=s.hvp)
            result = search(model, searcher, self.search_batches, self.alpha_batches, self.valid_eval, task, rule,
                            self._epoch_log(stage, tag))
        else:
            result = fit(model, self.train_batches, self.valid_eval, task, tc.lr, rule, self._epoch_log(stage, tag))
        return result, cpu_state(model)

    def prune(self, state: dict, keep: int) -> dict:
        # the model that searched (PEP: with its thresholds), sharing the state's tensors
        pruned = pruned_state(self._model(state, retrain=False, share=True), keep)
        if self.evaluate_pruned:
            self.pruned_valid[keep] = evaluate(self._model(pruned), self.valid_eval(0), self.config.task)
        return pruned


def initial_state(config: Config, prepared: PreparedData) -> dict:
    """The model's initial state for ``train.seed`` (the same in-process and on Ray)."""
    torch.manual_seed(config.train.seed)
    return cpu_state(build_model(config, prepared.features, prepared.label_mean))


def built(config: Config, prepared: PreparedData, results: list[tuple[dict, StageResult]]) -> list[StageResult]:
    """The graph's results with their models built from the final states."""
    for state, result in results:
        result.model = model_from_state(config, prepared.features, prepared.label_mean, state)
    return [result for _, result in results]


def run_in_process(config: Config, prepared: PreparedData, train: EncodedSplit, valid: EncodedSplit,
                   log: Log = print, evaluate_pruned: bool = False) -> StageResult:
    """The stage graph in this process on in-memory splits (the engine's reference for the Ray path); the first
    budget's model."""
    return run_all_in_process(config, prepared, train, valid, log, evaluate_pruned)[0]


def run_all_in_process(config: Config, prepared: PreparedData, train: EncodedSplit, valid: EncodedSplit,
                       log: Log = print, evaluate_pruned: bool = False,
                       searched: Optional[tuple[FitResult, dict]] = None) -> list[StageResult]:
    """The stage graph in this process: one model per budget (from an already ``searched`` state if given)."""
    executor = InProcessExecutor(config, prepared, train, valid, log, evaluate_pruned)
    results = built(config, prepared, run_graph(config, executor, initial_state(config, prepared), log, searched))
    for result in results:
        result.pruned_valid = executor.pruned_valid.get(result.budget.kept) if result.budget else None
    return results
