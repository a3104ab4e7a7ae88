"""AutoDim (Zhao et al., WWW 2021) and AutoEmb (Zhao et al., ICDM 2021): a bi-level search of weights over
candidate dimensions (per field / from a popularity controller per feature), the argmax kept, the selected
dimensions retrained from the initial embedding with fresh projections: one model at the size the search chose."""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np
import torch

from ..artifact.budget import Budget
from ..config import Config, ConfigError, SearchConfig
from ..data.prepared import PreparedData
from ..engine import autodim, autoemb
from ..engine.features import FeatureSpace
from ..engine.mixed_dims import first_dims_mask
from ..engine.model_state import cpu_state
from ..engine.packed import kept_of, packed_state
from ..engine.training import FitResult
from ..logs import Log
from .graph import ALPHA, StageExecutor, StageResult, train_stage
from .model import build_model
from .registry import Method


@dataclass(frozen=True)
class Selection:
    """What a search chose: every feature's dimension, the dims it reports (per field, or per candidate: how many
    features chose it), the retrain's projection groups if the choice sets them, and its log line."""

    per_feature: np.ndarray
    dims: list[int]
    block_of: Optional[torch.Tensor]
    line: str


def autodim_selection(config: Config, prepared: PreparedData, searched: dict) -> Selection:
    """AutoDim: each field's argmax candidate dimension."""
    s = config.search
    dims = autodim.selected_field_dims(searched[ALPHA], autodim.candidate_dims(s.K, s.autodim_candidates))
    names = (f.name for f in prepared.features.fields)
    return Selection(autodim.feature_dims(dims, prepared.features.field_of), dims, None,
                     f"[autodim] dimension per field: {dict(zip(names, dims))}")


def autoemb_selection(config: Config, prepared: PreparedData, searched: dict) -> Selection:
    """AutoEmb: each feature's argmax of its controller's weights; the projections are per chosen candidate."""
    s = config.search
    cands = autoemb.candidate_dims(s.K, s.autoemb_candidates)
    chosen = autoemb.selected_candidates(searched[ALPHA], searched["embedding.popularity"], len(cands))
    dims = [int((chosen == n).sum()) for n in range(len(cands))]
    return Selection(np.asarray(cands)[chosen.numpy()], dims, chosen,
                     f"[autoemb] features per chosen dimension: {dict(zip(cands, dims))}")


Select = Callable[[Config, PreparedData, dict], Selection]


def searched_dims_state(config: Config, prepared: PreparedData, searched: dict, initial: dict,
                        select: Select) -> tuple[dict, Selection]:
    """The retrain model's state for the search's choice: each feature keeps the first d dimensions of its choice,
    E and θ come from the initial state, the projections start fresh (identity)."""
    fresh = cpu_state(build_model(config, prepared.features, prepared.label_mean, retrain=True))
    state = {k: initial.get(k, v) if k not in ("embedding.projection", "embedding.block_of") else v
             for k, v in fresh.items()}
    chosen = select(config, prepared, searched)
    if chosen.block_of is not None:
        state["embedding.block_of"] = chosen.block_of
    return packed_state(state, first_dims_mask(chosen.per_feature, config.search.K)), chosen


def run_searched_dims(config: Config, executor: StageExecutor, initial: dict, log: Log,
                      searched: Optional[tuple[FitResult, dict]], parallel: int,
                      select: Select) -> list[tuple[dict, StageResult]]:
    """Search, select the dimensions, retrain; one model at the size the search chose."""
    search_result, searched_state = searched or train_stage(executor, config, "search", initial, log)
    start = time.perf_counter()
    state, chosen = searched_dims_state(config, executor.prepared, searched_state, initial, select)
    selection = time.perf_counter() - start
    log(chosen.line)
    kept = kept_of(state)
    budget = Budget("searched", kept, executor.prepared.num_features * config.search.K / kept)
    retrain, state = train_stage(executor, config, "retrain", state, log, config.search.method)
    timings = {"search": search_result.seconds, "prune": selection, "retrain": retrain.seconds}
    return [(state, StageResult(None, {"search": search_result, "retrain": retrain}, timings, budget,
                                searched_state.get(ALPHA), block_dims=tuple(chosen.dims)))]


def autodim_embedding(config: Config, features: FeatureSpace, sparse: bool) -> autodim.AutoDimEmbedding:
    s = config.search
    return autodim.AutoDimEmbedding(features.num_features, features.num_fields, s.K,
                                    autodim.candidate_dims(s.K, s.autodim_candidates), s.autodim_temperature, sparse,
                                    config.train.init_std)


def autoemb_embedding(config: Config, features: FeatureSpace, sparse: bool) -> autoemb.AutoEmbEmbedding:
    s = config.search
    embedding = autoemb.AutoEmbEmbedding(features.num_features, s.K, autoemb.candidate_dims(s.K, s.autoemb_candidates),
                                         sparse, config.train.init_std)
    frequencies = getattr(features, "frequencies", None)  # workers get it with the initial state instead
    if frequencies is not None:
        embedding.popularity.copy_(autoemb.popularity_input(frequencies))
    return embedding


def autodim_check(config: Config) -> None:
    if config.search.order == "second":
        raise ConfigError("search.order", "autodim searches first order (its Gumbel noise makes the finite-"
                                          "difference second-order term meaningless)")


def autoemb_groups(search: SearchConfig) -> int:
    return len(autoemb.candidate_dims(search.K, search.autoemb_candidates))


def autodim_report(config: Config, features: FeatureSpace, result: StageResult) -> dict:
    """The dimension the search chose for every field."""
    return {"field_dims": {f.name: d for f, d in zip(features.fields, result.block_dims)}}


def autoemb_report(config: Config, features: FeatureSpace, result: StageResult) -> dict:
    """How many features the controller gave each candidate dimension."""
    cands = autoemb.candidate_dims(config.search.K, config.search.autoemb_candidates)
    return {"features_per_dim": {str(d): n for d, n in zip(cands, result.block_dims)}}


AUTODIM = Method("autodim", partial(run_searched_dims, select=autodim_selection), first_stage="search",
                 sized_by_itself=True, retrain_projection="field", search_embedding=autodim_embedding,
                 check=autodim_check, report_extras=autodim_report)
AUTOEMB = Method("autoemb", partial(run_searched_dims, select=autoemb_selection), first_stage="search",
                 sized_by_itself=True, retrain_projection="block", projection_groups=autoemb_groups,
                 search_embedding=autoemb_embedding, report_extras=autoemb_report)
