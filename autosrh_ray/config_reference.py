"""Every config key with its default, allowed values and meaning — generated from the config dataclasses
(:mod:`autosrh_ray.config`), so the reference cannot drift from the code: ``autosrh-ray config --list`` prints it
and ``docs/config.md`` is this text (a test regenerates and compares both ways: a key without a meaning, or a
meaning without a key, fails it)."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterator, Literal, Union, get_args, get_origin

from .config import Config
from .engine.models.registry import BUILT_IN as BACKBONES
from .methods.registry import BUILT_IN as METHODS

MEANING = {
    "dataset.name": "reader and layout: criteo (dac text), avazu (csv), kdd12 (tsv), movielens / amazon (ratings csv), "
                    "tabular (your csv/tsv/parquet), synthetic (embedded, no download)",
    "dataset.path": "a file, a directory of shards or a glob; local or a URI (s3://, gs://, file://); not for synthetic",
    "dataset.min_count": "a categorical value seen fewer times in train shares its field's out-of-vocabulary row",
    "dataset.split": "train / valid / test fractions; each row's split is a hash of its position in the input",
    "dataset.seed": "seed of the split hash",
    "dataset.on_bad_rows": "error: stop at the first bad row (file and line); skip: count and report skipped rows",
    "dataset.numeric": "numerical fields: scale (one feature per field, its value standardised by the training "
                       "mean and std) or bucketize (each value a categorical token: int(x) for x <= 2, "
                       "L<floor(ln(x)^2)> for x > 2); default bucketize for criteo, scale otherwise",
    "dataset.format": "tabular: csv, tsv or parquet (default: from the file name)",
    "dataset.label": "tabular: the label column",
    "dataset.categorical": "tabular: categorical columns (one embedding row per kept value)",
    "dataset.numerical": "tabular: numerical columns",
    "dataset.task": "tabular: classification (AUC, log loss) or regression (MSE)",
    "dataset.synthetic.rows": "synthetic: rows generated",
    "dataset.synthetic.categorical_fields": "synthetic: categorical fields",
    "dataset.synthetic.signal_fields": "synthetic: categorical fields that carry the planted signal (the rest is noise)",
    "dataset.synthetic.numerical_fields": "synthetic: numerical fields",
    "dataset.synthetic.vocab_size": "synthetic: values per categorical field",
    "dataset.synthetic.zipf_exponent": "synthetic: skew of value frequencies (Zipf)",
    "dataset.synthetic.latent_dim": "synthetic: rank of the planted interactions",
    "dataset.synthetic.seed": "synthetic: generator seed",
    "model.name": "backbone: fm, widedeep, deepfm, dcnv2, dlrm (CTR); mf, mlp, neumf (rating); or your own class",
    "model.hidden": "MLP layer widths (widedeep, deepfm, mlp, neumf)",
    "model.options": "keyword arguments of the backbone's constructor: ClassName(num_fields, dim, **options) "
                     "(widedeep, deepfm, mlp and neumf take hidden and dropout from model.hidden and model.dropout; "
                     "dcnv2: cross_layers, rank, hidden, dropout, structure; dlrm: hidden, dropout)",
    "model.dropout": "dropout in the MLP layers (widedeep, deepfm, mlp, neumf)",
    "search.method": "autosrh (search, prune, retrain), uniform (UE: every feature K dims), magnitude (UE, then "
                     "prune |E| to the budget and retrain); baselines with dimensions fixed before training: grid "
                     "(UE at each of search.grid_K), random (random per-block dims at the budget), mde "
                     "(per-block dims from popularity, Ginart et al.); autodim (one dimension per field from a "
                     "bi-level search over candidates, Zhao et al.); autoemb (one dimension per feature from a "
                     "popularity controller, Zhao et al.); pep (learnable soft thresholds prune during training "
                     "until the budget, then a retrain from the initial values, Liu et al.)",
    "search.grid_K": "grid: the K' values tried (capped at search.K); a budget's entry is the best K' that fits it",
    "search.random_trials": "random: draws of per-block dimensions per budget; the best by validation is kept",
    "search.autoemb_candidates": "autoemb: the candidate dimensions a feature's controller chooses from (capped "
                                 "at search.K)",
    "search.pep_init_threshold": "pep: the start of every learnable threshold s (an entry is pruned once |V| <= "
                                 "sigmoid(s))",
    "search.pep_l2": "pep: weight of the L2 term on the thresholded embedding rows of each batch; larger prunes "
                     "faster",
    "search.autodim_candidates": "autodim: the candidate dimensions of every field (capped at search.K)",
    "search.autodim_temperature": "autodim: temperature of the Gumbel-softmax over a field's candidates",
    "search.mde_temperature": "mde: a block's dimension is proportional to its rows' popularity to this power "
                              "(0: the same for every block)",
    "search.K": "base embedding dimension: the uncompressed table is M x K",
    "search.L": "frequency blocks: features sorted by frequency, split into L blocks with one α vector each",
    "search.block_boundaries": "explicit block sizes instead of L (must sum to M)",
    "search.order": "first: first-order bi-level step; second: with the Hessian-vector correction (paper Eq. 14)",
    "search.xi": "virtual step size of the second-order step (default: train.lr)",
    "search.hvp": "second order: finite_difference (two extra backwards) or double_backward (exact, slower)",
    "search.alpha_optimizer": "optimiser of α: adam or sgd",
    "search.lr_alpha": "learning rate of α",
    "search.max_epochs": "cap on the search's evaluations (it stops earlier by patience; a cap hit is warned about)",
    "search.patience": "evaluations without a better validation loss before the search stops (best α/Θ kept)",
    "search.alpha_data": "the rows α is fitted on: validation (paper Eq. 11; its validation numbers are then "
                         "optimistic) or train (a hashed slice of train that Θ never sees)",
    "search.alpha_fraction": "alpha_data: train — the share of train rows held for α",
    "prune.cr": "compression ratio(s): keep round(M x K / cr) entries of |E ⊙ α|; a list gives one model each",
    "prune.params": "absolute budget(s): kept embedding entries (with cr, both lists are used)",
    "prune.precision": "how the artifact stores the kept values: fp32, fp16, or int8 / int4 codes with fp16 "
                       "scales and biases (prune.int_scales) (post-training; the reported metrics are the stored model's); a "
                       "list: one per frequency block (search.L, most frequent first); auto: fp32 for cr/params "
                       "budgets, and for a byte budget the candidate validation prefers (each uniform precision, "
                       "and two per-block ones guided by the dims each block keeps; a tighter byte budget's "
                       "candidates compete for every looser budget they fit)",
    "prune.int_scales": "what shares an int8 / int4 scale and bias (fp16 each): row — each kept row (4 bytes a "
                        "row, as FBGEMM stores tables); dim — each frequency block's dimension (search.L·K·4 bytes a "
                        "table, however many rows: cheaper at tight byte budgets, where a kept row holds few entries); "
                        "auto: a byte budget's candidates (precision auto) in both layouts, row elsewhere",
    "prune.quant_aware": "quantisation-aware retrain: below fp32 the packed retrain's forward reads every kept value "
                         "as the artifact will store it (int codes, fp16), gradients passed straight through; "
                         "the retrain's validation is then the stored model's",
    "prune.choice_fraction": "byte budgets (precision auto, or more than one budget): the hashed share of "
                             "the validation split a budget's model is chosen on, held from α's stream "
                             "(search.alpha_data: validation) so the candidates are not compared on rows α was "
                             "fitted to; 0: the whole split serves both. α then sees fewer validation rows, so "
                             "adding a byte budget to a run also changes its CR budgets' models a little",
    "prune.bytes_cr": "byte budgets (a number or a list): the artifact's embedding at most UE's dense fp32 table "
                      "(M·K·4 bytes) ÷ this, index included; the first budgets of the run. A model over its "
                      "budget (a candidate keeps at least one entry) is reported with within_budget: false; a "
                      "budget below one entry's smallest artifact is refused once M is known. In report.json a "
                      "byte budget's cr_target is the CR its chosen candidate's kept entries make; budget_bytes "
                      "is the limit",
    "prune.bytes": "byte budgets in bytes of the artifact's embedding (a number or a list), as prune.bytes_cr; "
                   "one below the smallest artifact (one entry kept) is refused before any work",
    "prune.retrain_from": "searched (paper Alg. 4: kept entries keep their searched values) or rewound (restart "
                          "them from their initialisation)",
    "train.lr": "learning rate of Θ (embeddings and network), Adam",
    "train.batch_size": "global batch (split across ray.num_workers, so divisible by it); a split smaller than one "
                        "batch gives one smaller batch",
    "train.max_epochs": "cap on evaluations of UE and retraining (they stop earlier by patience)",
    "train.patience": "evaluations without a better validation loss before a training stage stops (best kept)",
    "train.eval_every_steps": "N: evaluate every N steps; 0: after each pass over train, or 4 times per pass when a "
                              "pass is longer than 2,000 steps (huge data)",
    "train.seed": "seed of initialisation, shuffles and α's slice",
    "train.embedding_optimizer": "adam (dense), sparse_adam (sparse gradients, row-wise updates: faster for large "
                                 "tables) or auto (sparse_adam from M·K = 8,388,608 entries, else adam)",
    "train.init_std": "standard deviation of the embedding initialisation",
    "train.shuffle_window": "Ray path: rows permuted together in Ray Data (files also come in a new order each "
                            "epoch); 0 keeps the input order",
    "ray.address": "local: a private Ray of the run's own (inside a Ray job: the job's cluster); auto: the running "
                   "cluster; else a cluster address",
    "ray.num_workers": "Ray Train data-parallel workers; 0: every training stage in the driver process (a study's "
                       "trials: each in its own Tune actor) on in-memory splits (small data: no Train start-up, "
                       "same stage graph)",
    "ray.cpus_per_worker": "CPUs per worker (default: what is left after Ray Data's share, split evenly)",
    "ray.gpus_per_worker": "GPUs per worker (0: CPU training)",
    "ray.data_cpus": "CPUs kept for Ray Data (default max(1, CPUs/8)); never given to the workers",
    "ray.storage_path": "where Train runs checkpoint (default <output>/ray_results); a local path or a URI (s3://…); "
                        "shared storage on a cluster",
    "ray.max_failures": "worker failures a Train run recovers from (from its last checkpoint)",
    "ray.worker_cache_mb": "per worker: splits that fit are streamed once, then replayed from memory",
    "ray.object_store_mb": "shared object store of a local Ray (0: Ray's default, 30% of the machine's memory); Ray "
                           "Data's streaming stays within a share of it and spills beyond; ignored when joining a "
                           "running cluster (its own setting holds)",
    "ray.verbose": "Ray's own logs, worker output and Ray Data progress bars",
    "ray.stall_timeout_s": "a stage or study trial that reports nothing (no rows, evaluation or chunk) for this "
                           "long fails with one line saying what it waited for (a trial: marked failed, the study "
                           "goes on); 0: no limit",
    "run.name": "prefix of the Train runs (default: method and a hash of the config); same name = resume",
    "tune.enabled": "run a Ray Tune study over tune.search_space before pruning; the best trial is finished",
    "tune.search_space": "dotted key -> list of values (grid or choices) or {uniform|loguniform|randint: [a, b]}",
    "tune.search_alg": "grid (every combination x num_samples) or random (num_samples draws)",
    "tune.num_samples": "repeats of the grid, or random draws",
    "tune.scheduler": "asha (stops weak trials early) or fifo (every trial runs to its end)",
    "tune.metric": "the trials' score on validation: loss (log loss or MSE), auc or mse",
    "tune.grace_period": "ASHA: evaluations before a trial may be stopped",
    "tune.reduction_factor": "ASHA: keep the best 1/reduction_factor at each rung",
    "tune.retrain_epochs": "a trial's brief retrain at the study budget (stopped earlier by train.patience)",
    "tune.max_concurrent_trials": "0: as many as the cluster's CPUs hold",
    "report.reference": "uniform: also train UE, the yardstick report.md compares with; none: skip it",
    "report.plots": "PNG plots and report.md next to report.json",
}


def _keys(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if dataclasses.is_dataclass(default):
            yield from _keys(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], default


def _values(tp: Any) -> str:
    """The allowed values of a Literal (inside Optional), else the type's name."""
    args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) is Union else [tp]
    literals = [v for a in args if get_origin(a) is Literal for v in get_args(a)]
    listed = [a for a in args if get_origin(a) is list and get_origin(get_args(a)[0]) is Literal]
    if literals:
        return " \\| ".join(str(v) for v in literals) + (" or a list of them" if listed else "")
    names = [getattr(a, "__name__", str(a)).replace("typing.", "") for a in args]
    return " or ".join(names)


# keys whose values are a registry's names (or an import path of one's own)
CHOICES = {
    "model.name": " \\| ".join(BACKBONES) + " or package.module:ClassName",
    "search.method": " \\| ".join(METHODS) + " or package.module:NAME",
}


def keys() -> list[str]:
    return [key for key, _, _ in _keys(Config)]


def reference() -> str:
    """The Markdown reference of every key (``docs/config.md``)."""
    lines = ["# Configuration reference", "",
             "Generated from `autosrh_ray/config.py` by `autosrh-ray config --list` (do not edit by hand). Set keys in",
             "the workflow YAML (`section: {key: value}`) or on the command line (`--set section.key=value`, the value",
             "parsed as YAML). An unknown key stops the run with one line naming it (and the closest key).", "",
             "| key | default | values | meaning |", "|---|---|---|---|"]
    for key, tp, default in _keys(Config):
        lines.append(f"| `{key}` | `{default!r}` | {CHOICES.get(key) or _values(tp)} | {MEANING[key]} |")
    return "\n".join(lines) + "\n"
