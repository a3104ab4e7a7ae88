"""Dimension methods by name: a built-in's short name (``autosrh``, ``uniform``, …) or a method of one's own as
``package.module:NAME`` (a :class:`Method` importable from the Python path of every process, Ray workers too).

A :class:`Method` says what the rest of the workflow needs to know of a method — what its first stage is, whether
its embedding is split into frequency blocks, whether it takes byte budgets or sizes itself, and the fragment of
the stage graph (:mod:`.graph`) that runs it. Adding a built-in method is one module defining its ``Method`` plus
one line in :data:`BUILT_IN`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal, Optional

from ..errors import ConfigError, import_object

KEY = "search.method"

# (config, executor, initial state, log, searched (FitResult, state) or None, parallel) -> [(state, StageResult)]
GraphFragment = Callable[..., list]
# (config, features, sparse) -> the embedding (an nn.Module) the first stage trains; the registry imports nothing
# of the workflow (the config checks names against it), so these are described, not imported
SearchEmbedding = Callable[[Any, Any, bool], Any]


@dataclass(frozen=True)
class Method:
    """What the workflow needs to know of a dimension method.

    Args:
        name: the ``search.method`` value.
        run: its fragment of the stage graph (:func:`.graph.run_graph` hands over to it).
        first_stage: ``search`` (bi-level, α on held-out rows), ``uniform`` (Θ only, then pruned), ``pep``
            (pruned by learnable thresholds as it trains) or None (its
            candidates train as retrains).
        soft_selection: its embedding has AutoSrh's α (per block and dimension); α is reported and plotted.
        blocked: its embedding is split into ``search.L`` frequency blocks.
        byte_budgets: it takes ``prune.bytes_cr`` / ``prune.bytes``.
        sized_by_itself: one model at a size of its own choosing: it needs no budget.
        studied: a Ray Tune study (``tune.enabled``) may stand in for its search.
        retrain_projection: the retrain embedding's projections: ``block`` (per group of ``block_of``), ``field``,
            or None.
        projection_groups: how many projection groups a ``block`` projection has (0: one per frequency block).
        search_embedding: builds the first stage's embedding when it is not the plain one.
        check: its own config checks (raise :class:`~autosrh_ray.errors.ConfigError`).
        report_extras: ``(config, features, StageResult) -> dict`` merged into its report entry.
    """

    name: str
    run: GraphFragment
    first_stage: Optional[Literal["search", "uniform", "pep"]] = None
    soft_selection: bool = False
    blocked: bool = False
    byte_budgets: bool = False
    sized_by_itself: bool = False
    studied: bool = False
    retrain_projection: Optional[Literal["block", "field"]] = None
    projection_groups: Optional[Callable[[Any], int]] = None  # (search config) -> groups
    search_embedding: Optional[SearchEmbedding] = None
    check: Optional[Callable[[Any], None]] = None  # (config) -> None or ConfigError
    report_extras: Optional[Callable[..., dict]] = None

    @property
    def bi_level(self) -> bool:
        """Its first stage is the bi-level search: α is fitted on held-out rows (validation or a train slice)."""
        return self.first_stage == "search"


BUILT_IN: dict[str, str] = {
    "autosrh": "autosrh_ray.methods.autosrh:AUTOSRH",
    "uniform": "autosrh_ray.methods.uniform:UNIFORM",
    "magnitude": "autosrh_ray.methods.magnitude:MAGNITUDE",
    "grid": "autosrh_ray.methods.fixed_dims:GRID",
    "random": "autosrh_ray.methods.fixed_dims:RANDOM",
    "mde": "autosrh_ray.methods.fixed_dims:MDE",
    "autodim": "autosrh_ray.methods.searched_dims:AUTODIM",
    "autoemb": "autosrh_ray.methods.searched_dims:AUTOEMB",
    "pep": "autosrh_ray.methods.pep:PEP",
}


@lru_cache(maxsize=None)
def method_of(name: str) -> Method:
    """The :class:`Method` ``search.method`` names.

    Args:
        name: a built-in's short name or ``package.module:NAME``.

    Returns:
        The method (imported once per process).

    Raises:
        ConfigError: one line naming ``search.method`` for an unknown name or a path that is not a Method.
    """
    if name not in BUILT_IN and ":" not in name:
        raise ConfigError(KEY, f"unknown method {name!r}: one of {' | '.join(BUILT_IN)}, or your own as "
                               f"package.module:NAME")
    method = import_object(BUILT_IN.get(name, name), KEY)
    if not isinstance(method, Method):
        raise ConfigError(KEY, f"{name} is a {type(method).__name__}, not an autosrh_ray.methods.registry.Method")
    if name in BUILT_IN and method.name != name:
        raise ConfigError(KEY, f"{name} names the method {method.name!r}")  # a registry line that points astray
    return method
