"""One typed config tree, loaded from YAML, overridden with ``--set``, validated with one-line errors.

Every stage (prepare, search, prune, retrain, evaluate) reads the same :class:`Config`. Unknown keys are
errors; every error names the dotted key it is about.
"""
from __future__ import annotations

import dataclasses
import difflib
import glob
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from . import storage
from .engine.models.registry import check_name as check_backbone_name
from .errors import ConfigError
from .methods.registry import BUILT_IN, Method, method_of

CONFIG_FILE = "config.yaml"  # a run's config, written beside its report (predict reads raw rows with it)


@dataclass
class SyntheticConfig:
    """Shape of the embedded synthetic dataset (Criteo-like, with planted truth)."""

    rows: int = 120_000
    categorical_fields: int = 10
    signal_fields: int = 5
    numerical_fields: int = 3
    vocab_size: int = 1000
    zipf_exponent: float = 1.1
    latent_dim: int = 4
    seed: int = 7


@dataclass
class DatasetConfig:
    name: Literal["criteo", "avazu", "kdd12", "movielens", "amazon", "synthetic", "tabular"] = "synthetic"
    path: Optional[str] = None
    min_count: int = 1
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 2026
    on_bad_rows: Literal["error", "skip"] = "error"
    numeric: Optional[Literal["scale", "bucketize"]] = None
    format: Optional[Literal["csv", "tsv", "parquet"]] = None
    label: Optional[str] = None
    categorical: list[str] = field(default_factory=list)
    numerical: list[str] = field(default_factory=list)
    task: Optional[Literal["classification", "regression"]] = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = "deepfm"  # a built-in (fm | widedeep | deepfm | mf | mlp | neumf) or package.module:ClassName
    hidden: list[int] = field(default_factory=lambda: [400, 400, 400])
    dropout: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the backbone's constructor


@dataclass
class SearchConfig:
    method: str = "autosrh"  # a built-in (see autosrh_ray.methods.registry) or package.module:NAME
    K: int = 16
    L: int = 6
    block_boundaries: Optional[list[int]] = None
    order: Literal["first", "second"] = "first"
    xi: Optional[float] = None
    hvp: Literal["finite_difference", "double_backward"] = "finite_difference"
    alpha_optimizer: Literal["adam", "sgd"] = "adam"
    lr_alpha: float = 0.01
    max_epochs: int = 500  # cap on evaluations; the search stops when the soft model's validation loss stalls
    patience: int = 3
    alpha_data: Literal["validation", "train"] = "validation"  # paper: α fitted on the validation split
    alpha_fraction: float = 0.1  # alpha_data: train — the hashed share of train rows that fits α (held from Θ)
    grid_K: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32, 64])  # grid: UE at each K' (capped at K)
    random_trials: int = 8  # random: per-block dimension draws per budget, the best by validation is kept
    mde_temperature: float = 0.3  # mde: d_b ∝ popularity_b ** temperature (0 = the same d for every block)
    autodim_candidates: list[int] = field(default_factory=lambda: [8, 16, 32, 48, 64])  # autodim: capped at K
    autodim_temperature: float = 1.0  # autodim: Gumbel-softmax temperature of the field-wise weights
    autoemb_candidates: list[int] = field(default_factory=lambda: [2, 16, 128])  # autoemb: capped at K
    pep_init_threshold: float = -8.0  # pep: every threshold s starts here (g(s) = sigmoid(s) ≈ 3e-4)
    pep_l2: float = 0.003  # pep: λ of the L2 term on the thresholded rows of each batch (drives pruning)


@dataclass
class PruneConfig:
    cr: Union[float, list[float]] = 10.0  # one budget per entry: kept = round(M·K / cr)
    params: Optional[Union[int, list[int]]] = None  # absolute budgets: kept embedding entries
    retrain_from: Literal["searched", "rewound"] = "searched"  # rewound: kept entries restart from their init
    # budgets in the artifact's embedding bytes: UE's dense fp32 table (M·K·4) ÷ bytes_cr, or absolute bytes
    bytes_cr: Optional[Union[float, list[float]]] = None
    bytes: Optional[Union[int, list[int]]] = None
    # the artifact's kept values (int8/int4 row-wise), or a list: one per frequency block (search.L of them, most
    # frequent first); auto: fp32 for cr/params budgets, and for byte budgets the candidate (uniform or per block)
    # whose model (as many entries as fit at it) validation prefers
    precision: Union[Literal["auto", "fp32", "fp16", "int8", "int4"], list[Literal["fp32", "fp16", "int8", "int4"]]] \
        = "auto"
    # what shares an int8/int4 scale and bias: each kept row (4 B a row), or each frequency block's dimension (dim:
    # L·K·4 B a table); auto: a byte budget's candidates (precision auto) in both, else row
    int_scales: Literal["auto", "row", "dim"] = "auto"
    quant_aware: bool = False  # the retrain's forward reads the kept values as stored (straight-through gradients)
    # precision auto with a byte budget: the hashed share of the validation split the choice is made on, held from
    # α's stream (search.alpha_data: validation) so the candidates are not compared on rows α was fitted to
    choice_fraction: float = 0.25

    @property
    def chooses_by_validation(self) -> bool:
        """Whether validation chooses a byte budget's model among candidates: precisions (``precision: auto``), or
        a tighter byte budget's model that fits (more than one byte budget)."""
        budgets = len(self.bytes_crs) + len(self.byte_budgets)
        return budgets > 1 or (budgets == 1 and self.precision == "auto")

    @property
    def crs(self) -> list[float]:
        return list(self.cr) if isinstance(self.cr, list) else [self.cr]

    @property
    def param_budgets(self) -> list[int]:
        return _listed(self.params)

    @property
    def bytes_crs(self) -> list[float]:
        return _listed(self.bytes_cr)

    @property
    def byte_budgets(self) -> list[int]:
        return _listed(self.bytes)


def _listed(value) -> list:
    """A budget key's entries: none, one value or a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@dataclass
class TuneConfig:
    """A Ray Tune study of the search before pruning (``tune.enabled``); see :mod:`autosrh_ray.study`."""

    enabled: bool = False
    # dotted config key → a list of values (grid, or choices when sampling) or {uniform|loguniform|randint: [a, b]}
    search_space: dict[str, Any] = field(default_factory=dict)
    search_alg: Literal["grid", "random"] = "grid"  # grid: every combination × num_samples; random: num_samples draws
    num_samples: int = 1
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: Literal["loss", "auc", "mse"] = "loss"  # on validation: loss = log loss (CTR) or MSE (rating)
    grace_period: int = 2  # ASHA: evaluations before a trial may be stopped
    reduction_factor: int = 2  # ASHA: keep the best 1/reduction_factor at each rung
    retrain_epochs: int = 5  # a trial's brief retrain at the budget (stopped earlier by train.patience)
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs hold


@dataclass
class ReportConfig:
    reference: Literal["uniform", "none"] = "uniform"  # also train UE, the yardstick every model is compared to
    plots: bool = True  # PNG plots and report.md next to report.json


@dataclass
class TrainConfig:
    lr: float = 0.001
    batch_size: int = 4096
    max_epochs: int = 500
    patience: int = 3
    eval_every_steps: int = 0  # N: every N steps; 0: after each pass (4 times per pass when it is long)
    seed: int = 0
    embedding_optimizer: Literal["auto", "adam", "sparse_adam"] = "auto"  # auto: sparse_adam for large tables
    init_std: float = 0.01
    shuffle_window: int = 65_536  # Ray path: rows permuted together by Ray Data (+ file order per epoch); 0 = input order


@dataclass
class RayConfig:
    address: str = "local"
    num_workers: int = 1
    cpus_per_worker: Optional[float] = None
    gpus_per_worker: float = 0.0
    data_cpus: Optional[float] = None
    storage_path: Optional[str] = None
    max_failures: int = 1
    worker_cache_mb: int = 1024  # per worker: splits that fit are streamed once, then replayed from memory
    object_store_mb: int = 0  # a local Ray's shared object store (0: Ray's default, 30% of the memory)
    verbose: bool = False
    stall_timeout_s: float = 300.0  # a stage or trial that reports nothing this long fails (0: no limit)


@dataclass
class RunConfig:
    name: Optional[str] = None


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def task(self) -> str:
        """``classification`` or ``regression``, from the dataset (or ``dataset.task`` for tabular)."""
        if self.dataset.name in ("movielens", "amazon"):
            return "regression"
        if self.dataset.name == "tabular":
            return self.dataset.task or "classification"
        return "classification"

    @property
    def numeric_mode(self) -> str:
        """How numerical fields are embedded: ``dataset.numeric`` or the dataset's default."""
        if self.dataset.numeric:
            return self.dataset.numeric
        return "scale" if self.dataset.name in ("tabular", "synthetic") else "bucketize"

    @property
    def xi(self) -> float:
        """Virtual-step size of the second-order search (default: the Θ learning rate)."""
        return self.train.lr if self.search.xi is None else self.search.xi

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Building dataclasses from plain dicts with type checks.


def _check_value(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = " | ".join(str(c) for c in typing.get_args(tp))
            raise ConfigError(key, f"must be one of {choices} (got {value!r})")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        listed = [a for a in args if typing.get_origin(a) is list]  # a value or a list of them (prune.cr)
        if listed and isinstance(value, (list, tuple)):
            return _check_value(key, value, listed[0])
        return _check_value(key, value, next((a for a in args if a not in listed), args[0]))
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(key, f"must be a mapping with string keys (got {value!r})")
        _, value_tp = typing.get_args(tp)
        return {k: _check_value(f"{key}.{k}", v, value_tp) for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list (got {value!r})")
        return [_check_value(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping (got {value!r})")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config type {tp} at {key}")  # a bug in this module, not user input


# Keys that existed once: a config that still uses one gets told what replaced it.
REMOVED_KEYS = {
    "search.epochs": "removed: the search now runs until the validation loss stops improving; "
                     "set search.patience and search.max_epochs instead",
}


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if dotted in REMOVED_KEYS:
            raise ConfigError(dotted, REMOVED_KEYS[dotted])
        if key not in names:
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
            raise ConfigError(dotted, f"unknown config key{hint} (autosrh-ray config --list shows every key)")
        kwargs[key] = _check_value(dotted, value, hints[key])
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError("--set", f"expected dotted.key=value (got {text!r})")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as err:
        raise ConfigError(key, f"cannot parse value {raw!r}: {err.__class__.__name__}") from None
    return key.strip().split("."), value


def _merge(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(path), f"{part} is not a section")
        node = child
    node[path[-1]] = value


def load_config(path: Optional[str | os.PathLike] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Read a YAML config (or start from defaults), apply ``dotted.key=value`` overrides, validate.

    Raises :class:`ConfigError` with a one-line message naming the key or file.
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("", f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark else str(p)
            raise ConfigError("", f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("", f"{p}: top level must be a mapping of sections")
        data = loaded
    set_keys = set()
    for text in overrides:
        keys, value = _parse_override(text)
        _merge(data, keys, value)
        set_keys.add(".".join(keys))
    try:
        config = _build(Config, data, "")
        validate(config)
    except ConfigError as err:
        line = _key_lines(Path(path)).get(err.key) if path is not None and err.key not in set_keys else None
        if line is None:
            raise
        raise ConfigError(err.key, err.message, where=f"{path}:{line}") from None
    return config


def _key_lines(path: Path) -> dict[str, int]:
    """The 1-based line of every dotted key written in a YAML file (for errors that name where a key is)."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}{key.value}"
                lines[dotted] = key.start_mark.line + 1
                walk(value, dotted + ".")

    walk(yaml.compose(path.read_text()), "")
    return lines


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a nested dict (e.g. ``Config.to_dict()`` output)."""
    config = _build(Config, data, "")
    validate(config)
    return config


def _positive(key: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(key, f"must be >= {minimum} (got {value})")


def budget_choice_rows(config: Config) -> Optional[tuple[float, int]]:
    """(fraction, seed) of :func:`~autosrh_ray.data.split.in_alpha_slice` for the validation rows a byte budget's
    model is chosen on and α's stream leaves out, or None: the whole split serves both (no choice among
    candidates, no α fitted on validation, or ``prune.choice_fraction: 0``)."""
    p, s = config.prune, config.search
    method = method_of(s.method)
    if p.chooses_by_validation and p.choice_fraction > 0 and method.bi_level and method.byte_budgets \
            and s.alpha_data == "validation":
        return p.choice_fraction, config.train.seed
    return None


def validate(config: Config) -> None:
    """Checks that need no data. Checks that need M (e.g. L <= M) run in :func:`validate_against_data`."""
    method = method_of(config.search.method)
    _validate_search(config)
    check_backbone_name(config.model.name)
    if method.check is not None:
        method.check(config)
    _validate_prune(config, method)
    _validate_tune(config)
    _validate_train_and_ray(config)
    _validate_model(config)
    _validate_dataset(config)


def _validate_search(config: Config) -> None:
    s = config.search
    _positive("search.K", s.K)
    if s.K > 255:
        raise ConfigError("search.K", f"must be <= 255 (the artifact stores dimension indices as uint8; got {s.K})")
    _positive("search.L", s.L)
    _positive("search.max_epochs", s.max_epochs)
    _positive("search.patience", s.patience)
    _positive("search.random_trials", s.random_trials)
    if not s.grid_K:
        raise ConfigError("search.grid_K", "needs at least one K")
    for i, k in enumerate(s.grid_K):
        _positive(f"search.grid_K[{i}]", k)
    if s.pep_l2 < 0:
        raise ConfigError("search.pep_l2", f"must be >= 0 (got {s.pep_l2})")
    if not s.autoemb_candidates:
        raise ConfigError("search.autoemb_candidates", "needs at least one dimension")
    for i, d in enumerate(s.autoemb_candidates):
        _positive(f"search.autoemb_candidates[{i}]", d)
    if not s.autodim_candidates:
        raise ConfigError("search.autodim_candidates", "needs at least one dimension")
    for i, d in enumerate(s.autodim_candidates):
        _positive(f"search.autodim_candidates[{i}]", d)
    if s.autodim_temperature <= 0:
        raise ConfigError("search.autodim_temperature", f"must be > 0 (got {s.autodim_temperature})")
    if s.mde_temperature < 0:
        raise ConfigError("search.mde_temperature", f"must be >= 0 (got {s.mde_temperature})")
    if not 0 < s.alpha_fraction < 1:
        raise ConfigError("search.alpha_fraction", f"must be in (0, 1) (got {s.alpha_fraction})")
    if s.lr_alpha <= 0:
        raise ConfigError("search.lr_alpha", f"must be > 0 (got {s.lr_alpha})")
    if config.xi < 0:
        raise ConfigError("search.xi", f"must be >= 0 (got {config.xi})")
    if s.block_boundaries is not None:
        b = s.block_boundaries
        if len(b) != s.L - 1 or any(x <= 0 for x in b) or sorted(set(b)) != b:
            raise ConfigError("search.block_boundaries", f"must be L-1 = {s.L - 1} increasing positive ids (got {b})")
    if s.order == "second" and config.train.embedding_optimizer == "sparse_adam" and s.hvp == "double_backward":
        raise ConfigError("search.hvp", "double_backward needs dense embedding gradients (train.embedding_optimizer: adam)")


def _validate_prune(config: Config, method: Method) -> None:
    s = config.search
    for i, cr in enumerate(config.prune.crs):
        _positive(f"prune.cr[{i}]" if isinstance(config.prune.cr, list) else "prune.cr", cr)
    for i, p in enumerate(config.prune.param_budgets):
        _positive(f"prune.params[{i}]" if isinstance(config.prune.params, list) else "prune.params", p)
    for key, entries in (("prune.bytes_cr", config.prune.bytes_crs), ("prune.bytes", config.prune.byte_budgets)):
        for i, b in enumerate(entries):
            _positive(f"{key}[{i}]" if len(entries) > 1 else key, b)
        if entries and not method.byte_budgets:
            takers = [name for name in BUILT_IN if method_of(name).byte_budgets]
            raise ConfigError(key, f"byte budgets are for search.method {', '.join(takers)} ({s.method} "
                                   f"chooses its own size)")
    if isinstance(config.prune.precision, list) and len(config.prune.precision) != s.L:
        raise ConfigError("prune.precision", f"a list gives one precision per frequency block: search.L = {s.L} of "
                                             f"them, most frequent first (got {len(config.prune.precision)})")
    if not 0 <= config.prune.choice_fraction < 1:
        raise ConfigError("prune.choice_fraction", f"must be in [0, 1) (got {config.prune.choice_fraction})")
    if not method.sized_by_itself and not (config.prune.crs or config.prune.param_budgets
                                                    or config.prune.bytes_crs or config.prune.byte_budgets):
        raise ConfigError("prune.cr", "needs at least one budget (prune.cr, prune.params, prune.bytes_cr or "
                                      "prune.bytes)")


def _validate_train_and_ray(config: Config) -> None:
    ds = config.dataset
    _positive("train.batch_size", config.train.batch_size)
    _positive("train.max_epochs", config.train.max_epochs)
    _positive("train.patience", config.train.patience)
    _positive("train.eval_every_steps", config.train.eval_every_steps, minimum=0)
    _positive("dataset.min_count", ds.min_count)
    _positive("ray.num_workers", config.ray.num_workers, minimum=0)
    if config.ray.num_workers and config.train.batch_size % config.ray.num_workers:  # each worker takes B/W rows
        raise ConfigError("train.batch_size", f"must be divisible by ray.num_workers = {config.ray.num_workers} "
                                              f"(got {config.train.batch_size})")
    _positive("ray.worker_cache_mb", config.ray.worker_cache_mb, minimum=0)
    if config.ray.object_store_mb and config.ray.object_store_mb < 75:
        raise ConfigError("ray.object_store_mb", f"must be 0 (Ray's default) or >= 75, Ray's smallest object store "
                                                 f"(got {config.ray.object_store_mb})")
    if config.ray.stall_timeout_s < 0:
        raise ConfigError("ray.stall_timeout_s", f"must be >= 0 (0: no limit; got {config.ray.stall_timeout_s})")
    _positive("train.shuffle_window", config.train.shuffle_window, minimum=0)
    if config.train.lr <= 0:
        raise ConfigError("train.lr", f"must be > 0 (got {config.train.lr})")


def _validate_model(config: Config) -> None:
    ds = config.dataset
    if any(h < 1 for h in config.model.hidden):
        raise ConfigError("model.hidden", f"layer sizes must be >= 1 (got {config.model.hidden})")
    if not 0 <= config.model.dropout < 1:
        raise ConfigError("model.dropout", f"must be in [0, 1) (got {config.model.dropout})")
    classification = config.task == "classification"
    if config.model.name in ("fm", "widedeep", "deepfm") and not classification:
        raise ConfigError("model.name", f"{config.model.name} is a CTR model; dataset {ds.name} is regression")
    if config.model.name in ("mf", "mlp", "neumf") and classification and ds.name != "tabular":
        raise ConfigError("model.name", f"{config.model.name} is a rating model; dataset {ds.name} is classification")


def _validate_dataset(config: Config) -> None:
    ds = config.dataset
    if len(ds.split) != 3 or any(x < 0 for x in ds.split) or abs(sum(ds.split) - 1.0) > 1e-6:
        raise ConfigError("dataset.split", f"must be three non-negative fractions summing to 1 (got {ds.split})")
    if min(ds.split[0], ds.split[1]) <= 0:
        raise ConfigError("dataset.split", "train and valid fractions must be > 0")
    syn = ds.synthetic
    for key in ("rows", "categorical_fields", "vocab_size", "latent_dim"):
        _positive(f"dataset.synthetic.{key}", getattr(syn, key))
    if not 0 <= syn.signal_fields <= syn.categorical_fields:
        raise ConfigError("dataset.synthetic.signal_fields", "must be between 0 and categorical_fields")
    if syn.numerical_fields < 0:
        raise ConfigError("dataset.synthetic.numerical_fields", "must be >= 0")
    _validate_dataset_source(ds)




TUNE_DISTRIBUTIONS = ("uniform", "loguniform", "randint")
NOT_TUNABLE = ("dataset", "ray", "run", "tune", "report", "prune")  # sections a trial may not change


def _validate_tune(config: Config) -> None:
    t = config.tune
    for key in ("num_samples", "grace_period", "retrain_epochs"):
        _positive(f"tune.{key}", getattr(t, key))
    _positive("tune.reduction_factor", t.reduction_factor, minimum=2)
    _positive("tune.max_concurrent_trials", t.max_concurrent_trials, minimum=0)
    if t.metric == "auc" and config.task != "classification":
        raise ConfigError("tune.metric", f"auc needs a classification task; dataset {config.dataset.name} is regression")
    if t.metric == "mse" and config.task != "regression":
        raise ConfigError("tune.metric", "mse needs a regression task")
    if t.enabled and not method_of(config.search.method).studied:
        raise ConfigError("tune.enabled", f"a study searches AutoSrh (search.method: autosrh); got "
                                          f"{config.search.method} (compare methods with autosrh-ray compare)")
    if t.enabled and not t.search_space:
        raise ConfigError("tune.search_space", "a study needs at least one key to search over")
    for dotted, spec in t.search_space.items():
        key = f"tune.search_space.{dotted}"
        if dotted.split(".")[0] in NOT_TUNABLE or "." not in dotted:
            raise ConfigError(key, "not tunable (a trial may change search.*, train.* and model.* keys)")
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in TUNE_DISTRIBUTIONS:
                raise ConfigError(key, f"a distribution is one of {{{' | '.join(TUNE_DISTRIBUTIONS)}: [low, high]}}")
            bounds = next(iter(spec.values()))
            if not (isinstance(bounds, list) and len(bounds) == 2 and bounds[0] < bounds[1]):
                raise ConfigError(key, f"needs [low, high] with low < high (got {bounds!r})")
            values = bounds
        elif isinstance(spec, list) and spec:
            values = spec
        else:
            raise ConfigError(key, f"must be a non-empty list of values or a distribution (got {spec!r})")
        for value in values:  # each value must be valid where it goes (one-line error naming the key)
            trial = dataclasses.asdict(config)
            trial["tune"].update(enabled=False, search_space={})
            _set_dotted(trial, dotted, value, key)
            try:
                config_from_dict(trial)
            except ConfigError as err:
                raise ConfigError(key, f"value {value!r}: {err}") from None


def _set_dotted(data: dict, dotted: str, value: Any, key: str) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(key, f"unknown config key {dotted}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(key, f"unknown config key {dotted}")
    node[parts[-1]] = value


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted keys set (a trial's values), validated."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        _set_dotted(data, dotted, value, dotted)
    return config_from_dict(data)


def _validate_dataset_source(ds: DatasetConfig) -> None:
    if ds.name == "synthetic":
        return
    if not ds.path:
        raise ConfigError("dataset.path", f"required for dataset {ds.name}")
    if storage.is_uri(ds.path):
        wildcard = any(c in ds.path for c in "*?[")
        if not (storage.glob_files(ds.path) if wildcard else storage.exists(ds.path)):
            raise ConfigError("dataset.path", f"nothing at {ds.path} (or its storage cannot be reached)")
    elif not glob.glob(ds.path) and not os.path.exists(storage.local_path(ds.path)):
        raise ConfigError("dataset.path", f"no file matches {ds.path}")
    if ds.name == "tabular":
        if not ds.label:
            raise ConfigError("dataset.label", "required for dataset tabular")
        if not ds.categorical and not ds.numerical:
            raise ConfigError("dataset.categorical", "tabular needs at least one categorical or numerical column")


# Defaults that depend on the data (resolved once its size is known: :func:`sized_for_data`).
LONG_PASS_STEPS = 2000  # a pass over train longer than this many steps is evaluated several times ...
EVALS_PER_LONG_PASS = 4  # ... this many (a pass over Criteo's 36M training rows at batch 4096 is 8.8k steps)
SPARSE_FROM_ENTRIES = 1 << 23  # M·K from which `auto` picks sparse_adam (1.67x dense Adam at M·K = 16M on CPU,
#                                even at 3.2M: benchmarks/engine_throughput.py)


def evaluation_steps(config: Config, train_rows: int) -> int:
    """``train.eval_every_steps`` as set; when 0, every pass (0) unless a pass has more than
    :data:`LONG_PASS_STEPS` steps, then :data:`EVALS_PER_LONG_PASS` evaluations per pass."""
    if config.train.eval_every_steps:
        return config.train.eval_every_steps
    steps = -(-train_rows // config.train.batch_size)
    return -(-steps // EVALS_PER_LONG_PASS) if steps > LONG_PASS_STEPS else 0


def sparse_embedding(config: Config, num_features: int) -> bool:
    """Whether the embedding table gets sparse gradients and SparseAdam: ``train.embedding_optimizer`` as set;
    ``auto``: for tables of at least :data:`SPARSE_FROM_ENTRIES` entries (the dense optimiser updates all M·K
    entries every step), except for the double-backward second-order search, which needs dense gradients."""
    choice = config.train.embedding_optimizer
    if choice != "auto":
        return choice == "sparse_adam"
    s = config.search
    return num_features * s.K >= SPARSE_FROM_ENTRIES and not (s.order == "second" and s.hvp == "double_backward")


def sized_for_data(config: Config, train_rows: int, num_features: int) -> tuple[Config, list[str]]:
    """The config with ``train.eval_every_steps`` made explicit for the data, and a line for each data-dependent
    default chosen (``train.embedding_optimizer: auto`` stays as it is: each model decides by its own M·K, so a
    study's trials with another K decide for themselves)."""
    notes = []
    every = evaluation_steps(config, train_rows)
    if every != config.train.eval_every_steps:
        notes.append(f"a pass over train is {-(-train_rows // config.train.batch_size):,} steps: evaluating every "
                     f"{every:,} steps (train.eval_every_steps)")
        config = with_overrides(config, {"train.eval_every_steps": every})
    if config.train.embedding_optimizer == "auto" and sparse_embedding(config, num_features):
        notes.append(f"M·K = {num_features * config.search.K:,} embedding entries: sparse gradients and SparseAdam "
                     f"(train.embedding_optimizer)")
    return config, notes


def validate_against_data(config: Config, num_features: int) -> None:
    """Checks that need the feature count M (known after prepare, before any training)."""
    if config.search.L > num_features:
        raise ConfigError("search.L", f"must be <= M = {num_features} features (got {config.search.L})")
    b = config.search.block_boundaries
    if b is not None and b[-1] >= num_features:
        raise ConfigError("search.block_boundaries", f"must be < M = {num_features} (got {b[-1]})")
