"""The stage graph in this process on in-memory splits: the engine's loops run each stage (tests, benchmarks, small
data with ``ray.num_workers: 0``); deterministic for a given ``train.seed``."""
from __future__ import annotations

from typing import Callable, Optional

from ..config import Config, budget_choice_rows
from ..data.prepared import EncodedSplit, PreparedData
from ..data.split import in_alpha_slice
from ..engine.batch import iterate_batches
from ..engine.model import EmbeddingModel
from ..engine.model_state import cpu_state
from ..engine.prune import pruned_state
from ..engine.search import BiLevelSearch
from ..engine.training import EpochBatches, FitResult, StopRule, evaluate, fit, search
from ..logs import Log
from .graph import StageResult, built, epoch_line, initial_state, run_graph
from .model import model_from_state


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

    def search_then_retrain(self, state: dict, search_rule: StopRule, keep: int, retrain_rule: StopRule, tag: str,
                            first: str = "search", run: str = "trial") -> None:
        """None: in this process the graph runs the stages one at a time (nothing to save by chaining them)."""
        return None

    def summarised_live(self, stage: str) -> bool:
        return False


def run_all_in_process(config: Config, prepared: PreparedData, train: EncodedSplit, valid: EncodedSplit,
                       log: Log = print, evaluate_pruned: bool = False,
                       searched: Optional[tuple[FitResult, dict]] = None) -> list[StageResult]:
    """The stage graph in this process: one model per budget (from an already ``searched`` state if given)."""
    executor = InProcessExecutor(config, prepared, train, valid, log, evaluate_pruned)
    results = built(config, prepared, run_graph(config, executor, initial_state(config, prepared), log, searched))
    for result in results:
        result.pruned_valid = executor.pruned_valid.get(result.budget.kept) if result.budget else None
    return results
