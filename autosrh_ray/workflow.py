"""prepare → (study | search) → prune → retrain → evaluate → report: the user-facing workflow.

:func:`run` prepares on Ray Data, runs the stage graph of ``search.method`` (:mod:`.methods`: AutoSrh, UE,
magnitude, PEP, grid, random, MDE, AutoDim, AutoEmb, or a method of one's own) with every training stage on Ray
Train (local Ray by default, ``ray.address`` to attach to a cluster; in this process with ``ray.num_workers: 0``),
optionally after a Ray Tune study (:mod:`.study`) that picks L, K and learning rates, then reads the test split
once to evaluate every final model — one per budget of ``prune.cr`` / ``prune.params``, and per byte budget
(``prune.bytes_cr`` / ``prune.bytes``) the candidate validation chose — and the UE reference
(``report.reference``). Every training stage stops when its validation loss stops improving
(``search.patience`` / ``train.patience``, capped by ``*.max_epochs``). The report is typed
(:mod:`.report.schema`) and written once as ``report.json``.

Output directory::
    report.json  report.md  alpha.png  kept_dims.png  quality.png  [study.png]
    config.yaml                               the run's config (``autosrh-ray predict`` reads raw rows with it)
    model.pt  dims.parquet  alpha.npy         the first budget's model (the top level of report.json), searched α
    models/<budget>/model.pt, dims.parquet    every other budget's model
    reference/model.pt, dims.parquet          the UE reference
    data/  ray_results/                        prepared data; Train runs, the study and its TensorBoard files

The output may be a local directory or a URI (``s3://bucket/runs/x``, ``gs://...``): then the prepared data and
the Train runs are written there directly (every node reads them), and the files above are written into a local
staging directory and uploaded at the end.

Re-running the same command resumes: finished Train runs hand back their results and a finished study's trials
are not run again; ``fresh=True`` (``--fresh``) starts over.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from . import atomic, storage
from .artifact.budget import Budget, check_byte_budgets, stored_as_integers
from .artifact.format import ArtifactBytes, embedding_bytes_of, load_model, save_model
from .config import (CONFIG_FILE, Config, ConfigError, budget_choice_rows, sized_for_data, validate_against_data,
                     with_overrides)
from .data.prepare import prepare as prepare_on_ray
from .data.prepared import PreparedData, split_from_columns
from .data.split import in_alpha_slice
from .distributed.orphan_groups import release_job_groups
from .distributed.shared_paths import check_shared_paths
from .distributed.stages import run_on_ray_train, storage_path
from .distributed.waiting_for import ray_waiting_for
from .engine.batch import Batch
from .engine.metrics import reported_metrics, task_metrics, validation_loss
from .engine.mixed_dims import projection_params
from .engine.model import EmbeddingModel
from .engine.models.backbone import constructor_options
from .engine.precision_plan import reported
from .logs import Log
from .methods.graph import StageResult
from .methods.in_process import run_all_in_process
from .methods.model import check_backbone, model_from_state
from .methods.registry import method_of
from .report.markdown import write_report_md
from .report.schema import ModelEntry, Params, Report, RowsReport, StoredBytes
from .runtime import caller_ray_note, connect
from .study import StudyResult, run_study
from .supervise import beating, supervised

ALPHA_ON_VALID_NOTE = ("α was fitted on the validation split (search.alpha_data: validation, as in the paper), so "
                       "the validation metrics of this model are optimistic; read its quality from test")


def _write_dims(model: EmbeddingModel, prepared: PreparedData, path: Path) -> None:
    """Per-feature kept dimension indices (the mixed dimension scheme D) with field and frequency."""
    emb = model.embedding
    kept = emb.kept_per_feature().cpu().numpy()
    dims = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(kept)])),
                                    pa.array(emb.kept_dims().cpu().numpy().astype(np.int16)))
    feats = prepared.features
    table = pa.table({
        "id": pa.array(np.arange(feats.num_features)),
        "field": pa.array([feats.fields[f].name for f in feats.field_of]),
        "block": pa.array(emb.block_of.cpu().numpy()),
        "frequency": pa.array(feats.frequencies),
        "kept_dims": pa.array(kept),
        "dims": dims,
    })
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _projection_params(emb, prepared: PreparedData) -> int:
    """Projection params of a model that has them (MDE, AutoDim, AutoEmb), else 0."""
    if emb.projection is None:
        return 0
    by_field = emb.projection_by == "field"
    groups = torch.from_numpy(prepared.features.field_of) if by_field else emb.block_of
    return projection_params(emb.kept_per_feature(), groups, emb.projection.shape[0], emb.dim)


def model_entry(config: Config, prepared: PreparedData, stages: StageResult, test_metrics: dict,
                saved: "SavedModel") -> ModelEntry:
    """The report's description of one final model (the same fields at the top level and under ``models``)."""
    m, k = prepared.num_features, config.search.K
    method = method_of(config.search.method)
    emb, stored = stages.model.embedding, saved.stored
    uniform = m * k
    kept = emb.kept_count()  # counted from the kept entries
    first, budget = stages.search, stages.budget
    entry = ModelEntry(
        method=config.search.method, model=config.model.name, dataset=config.dataset.name, task=config.task, K=k,
        L=config.search.L if method.blocked else 1,
        budget=(budget.group or budget.name) if budget else "uniform",
        cr_target=budget.cr if budget else 1, cr_achieved=uniform / kept, num_features=m,
        params=Params(uniform, kept, m, _projection_params(emb, prepared)),
        # whole split, the chosen evaluation
        valid={key: stages.retrain.best_valid[key] for key in reported_metrics(config.task)},
        test=test_metrics,
        valid_optimistic=method.bi_level and config.search.alpha_data == "validation",
        timings_s=dict(stages.timings), artifacts=saved.artifacts,
        artifact_bytes={"compact_model": stored.file, "dense_embedding": m * k * 4},
        # as the artifact stores it, counted from its tensors; bytes_cr: UE's dense fp32 table over this model's
        precision=reported(budget.precision) if budget else "fp32",
        int_scales=budget.int_scales if budget and stored_as_integers(budget.precision) else None,
        bytes=StoredBytes(stored.embedding, m * k * 4, stored.other, m * k * 4 / max(stored.embedding, 1)),
        stages={name: result.summary() for name, result in stages.stages.items()},
        epochs={"search": first.epochs if first else 0, "retrain": stages.retrain.epochs},
        history={"search": first.history if first else [], "retrain": stages.retrain.history},
        within_budget=within_budget(budget, kept, stored.embedding))
    if budget is not None:  # the limit itself (a byte budget's: its group's, set where it is chosen)
        if budget.bytes is not None:
            entry.budget_bytes = budget.bytes
        else:
            entry.budget_params = budget.kept
    if method.report_extras is not None:  # e.g. AutoDim's dimension per field
        entry.extras.update(method.report_extras(config, prepared.features, stages))
    if stages.candidates is not None:  # grid / random / mde: every scheme trained, the chosen one marked
        entry.block_dims = list(stages.block_dims)
        entry.candidates = stages.candidates
    if entry.valid_optimistic:
        entry.notes = [ALPHA_ON_VALID_NOTE]
    return entry


def within_budget(budget: Optional[Budget], kept: int, embedding_bytes: int) -> bool:
    """Whether a model meets its budget: its artifact's embedding bytes for a byte budget, its kept entries for a
    CR or params budget (a fixed scheme that fits no budget keeps its smallest and exceeds it); no budget: True."""
    if budget is None:
        return True
    return embedding_bytes <= budget.bytes if budget.bytes is not None else kept <= budget.kept


def iter_split_batches(prepared: PreparedData, split: str, batch_size: int) -> Iterator[Batch]:
    """Stream one split's Parquet shards in the driver, one batch at a time (never the whole split in memory)."""
    for path in prepared.split_paths(split):
        for record_batch in pq.ParquetFile(storage.parquet_source(path)).iter_batches(batch_size=batch_size):
            cols = {name: col.to_numpy(zero_copy_only=False)
                    for name, col in zip(record_batch.schema.names, record_batch.columns)}
            encoded = split_from_columns(cols, prepared.features.num_fields)
            yield Batch.from_numpy(encoded.ids, encoded.values, encoded.labels)


def evaluate_on_test(models: list[EmbeddingModel], prepared: PreparedData, task: str,
                     batch_size: int) -> list[dict]:
    """Every final model's metrics over the whole test split, read once (one pass feeds all models)."""
    return evaluate_on_split(models, prepared, "test", task, batch_size)


@torch.no_grad()
def evaluate_on_split(models: list[EmbeddingModel], prepared: PreparedData, split: str, task: str,
                      batch_size: int, rows: Optional[tuple[float, int]] = None) -> list[dict]:
    """Every model's metrics over the whole ``split`` (``rows``: only the rows of that hashed slice,
    :func:`~autosrh_ray.data.split.in_alpha_slice`), streamed in the driver once for all of them."""
    outputs: list[list[np.ndarray]] = [[] for _ in models]
    labels = []
    for model in models:
        model.eval()
    for batch in iter_split_batches(prepared, split, batch_size):
        if rows is not None:
            keep = torch.from_numpy(in_alpha_slice(batch.ids.numpy(), *rows))
            batch = Batch(batch.ids[keep], batch.values[keep], batch.labels[keep])
        labels.append(batch.labels.double().numpy())
        for i, model in enumerate(models):
            outputs[i].append(model(batch.ids, batch.values).double().numpy())
    y = np.concatenate(labels) if labels else np.zeros(0)
    return [task_metrics(task, y, np.concatenate(o) if o else np.zeros(0)) for o in outputs]


@dataclass
class ByteBudgetChoices:
    """Which results become the report's models and, per byte budget, its candidates' rows (each with the index of
    its result, for its test metrics). ``best``: per byte budget, the index of the result validation chose;
    :meth:`reported_order` lists the results to report, one per budget."""

    best: dict[str, int]
    groups: dict[str, list[dict]]
    limits: dict[str, int] = field(default_factory=dict)  # per byte budget, its bytes

    def reported_order(self, results: list[StageResult]) -> list[tuple[int, str]]:
        """(result index, budget name) per reported model, in the run's order: every result outside a byte budget,
        and for each byte budget (at its first candidate's place) the one chosen for it — which may be a tighter
        budget's candidate."""
        out, seen = [], set()
        for i, r in enumerate(results):
            group = r.budget.group if r.budget is not None else ""
            if not group:
                out.append((i, (r.budget.name if r.budget else "uniform")))
            elif group not in seen:
                seen.add(group)
                out.append((self.best[group], group))
        return out


@dataclass(frozen=True)
class SavedModel:
    """A final model as written: its artifacts' paths (relative to the output), the artifact's bytes, and the
    model to evaluate (below fp32 the one the artifact loads as: what is evaluated is what is stored)."""

    artifacts: dict[str, str]
    stored: ArtifactBytes
    model: EmbeddingModel


def byte_budget_choices(results: list[StageResult], saved: list[SavedModel], prepared: PreparedData, task: str,
                        batch_size: int, held: Optional[tuple[float, int]] = None) -> ByteBudgetChoices:
    """Per byte budget, the candidate with the lowest validation loss (over the validation rows ``held`` from α's
    stream when given, :func:`~autosrh_ray.config.budget_choice_rows`) among its own (a precision and as many
    entries as fit at it) and every other byte budget's whose artifact fits it (a tighter budget's, as a rule): a
    budget is a ceiling, and a smaller model that validates better is the better choice. The validation split is
    read once for all candidates."""
    members: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        if r.budget is not None and r.budget.group:
            members.setdefault(r.budget.group, []).append(i)
    if not members:
        return ByteBudgetChoices({}, {})
    indices = [i for group in members.values() for i in group]
    valid = dict(zip(indices, evaluate_on_split([saved[i].model for i in indices], prepared, "valid", task,
                                                batch_size, held)))
    best, groups, limits = {}, {}, {}
    for group, own in members.items():
        limit = limits[group] = results[own[0]].budget.bytes
        fitting = [i for other, theirs in members.items() if other != group
                   for i in theirs if saved[i].stored.embedding <= limit]
        candidates = own + fitting
        # an own candidate that keeps one entry over its bytes (none fits at its precision) competes only when
        # nothing meets the budget, and then the smallest stands for it
        met = [i for i in candidates if saved[i].stored.embedding <= limit]
        pool = met or [min(candidates, key=lambda i: saved[i].stored.embedding)]
        best[group] = min(pool, key=lambda i: validation_loss(task, valid[i]))
        groups[group] = [{"name": results[i].budget.name, "budget": results[i].budget.group,
                          "precision": reported(results[i].budget.precision),
                          **({"int_scales": results[i].budget.int_scales}
                             if stored_as_integers(results[i].budget.precision) else {}),
                          "kept": results[i].budget.kept, "bytes": saved[i].stored.embedding,
                          "within_budget": saved[i].stored.embedding <= limit,
                          "valid": valid[i], "model": saved[i].artifacts["model"], "chosen": i == best[group], "index": i}
                         for i in candidates]
    return ByteBudgetChoices(best, groups, limits)


def _built(config: Config, prepared: PreparedData, state: dict) -> EmbeddingModel:
    return model_from_state(config, prepared.features, prepared.label_mean, state)


def _save_model(config: Config, prepared: PreparedData, result: StageResult, output: Path,
                folder: str) -> SavedModel:
    """The model's artifact (its kept values at its budget's precision, fp32 without one) and its dims table."""
    b = result.budget
    precision, starts, scales = (b.precision, b.block_starts, b.int_scales) if b else ("fp32", (0,), "row")
    artifacts = {"model": f"{folder}model.pt", "dims": f"{folder}dims.parquet"}
    with atomic.atomic_path(output / artifacts["model"]) as tmp:
        m = config.model
        stored = save_model(result.model, tmp, m.name, prepared.features.num_fields,
                            constructor_options(m.name, m.hidden, m.dropout, m.options), precision, starts, scales)
    _write_dims(result.model, prepared, output / artifacts["dims"])
    return SavedModel(artifacts, stored,
                      load_model(output / artifacts["model"]) if precision != "fp32" else result.model)


def _forget(train_storage: str, log: Log) -> None:
    """``--fresh``: drop what earlier runs of this workflow left in its Train storage (never the prepared data)."""
    if storage.exists(train_storage):
        log(f"fresh: removing {train_storage}")
        storage.remove(train_storage)


def _check_paths(config: Config, output: str) -> None:
    """On a multi-node cluster: local data, output and Train storage paths must be absolute and seen by every
    node (URIs name shared storage by nature)."""

    connect(config.ray)
    inputs = {}
    if config.dataset.name != "synthetic" and config.dataset.path:
        path = config.dataset.path
        inputs["dataset.path"] = path.split("*")[0].rsplit("/", 1)[0] if "*" in path else path
    outputs = {"--output": output}
    if config.ray.storage_path:
        outputs["ray.storage_path"] = config.ray.storage_path
    check_shared_paths({k: v for k, v in inputs.items() if not storage.is_uri(v)},
                       {k: v for k, v in outputs.items() if not storage.is_uri(v)})


def _relative(path: str, base: str) -> str:
    """``path`` relative to ``base`` when it lies inside it (local or URI), else ``path`` itself."""
    prefix = base.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _check_output(destination: str) -> bool:
    """A local output directory can be created and written, checked before any work (one line naming
    ``--output`` if not); True if this call created it."""
    if storage.is_uri(destination):
        return False
    path = Path(destination)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise ConfigError("--output", f"cannot create or write {path}: {err.strerror or err}") from None
    return created


def _supervised(config: Config, destination: str, work: Callable[[], object]):
    """``work()`` under the stall watchdog (``ray.stall_timeout_s``); an output directory this run created and
    left empty (it failed or was interrupted before writing anything) is removed."""

    created = _check_output(destination)
    connect(config.ray)  # in this (usually the main) thread: Ray installs its signal handlers here
    try:
        return supervised(work, config.ray.stall_timeout_s, ray_waiting_for, release_job_groups)
    except BaseException:
        if created and not any(Path(destination).iterdir()):
            Path(destination).rmdir()
        raise


def run(config: Config, output: str | Path, prepared: Optional[PreparedData] = None, log: Log = print,
        loop_options=None, fresh: bool = False) -> dict:
    """The whole workflow; writes ``output/report.json`` (and report.md, plots, artifacts) and returns the report.

    Fails with :class:`~autosrh_ray.supervise.StallError` when a stage or trial reports nothing for
    ``ray.stall_timeout_s``; Ctrl-C raises ``KeyboardInterrupt`` at once (what finished is kept: re-running
    resumes). ``loop_options`` (:class:`~autosrh_ray.distributed.stages.LoopOptions`) are test hooks for the
    Train loops.
    """
    destination = storage.absolute(output)
    check_byte_budgets(config.prune, config.search.K, blocks=config.search.L)
    note = caller_ray_note()
    if note:
        log(note)
    return _supervised(config, destination,
                       lambda: _run(config, destination, prepared, beating(log), loop_options, fresh))


@dataclass
class Trained:
    """What the training stages left: the final config (a study's best, or the run's), one result per budget, the
    UE reference (its config and result) and the study, when there are."""

    config: Config
    results: list[StageResult]
    reference: Optional[tuple[Config, StageResult]] = None
    study: Optional[StudyResult] = None


def _train(config: Config, prepared: PreparedData, destination: str, train_storage: str, log: Log,
           loop_options) -> Trained:
    """[study] → the stage graph (in this process or on Ray Train) → the UE reference."""
    splits: list = []

    def in_memory() -> list:
        if not splits:
            splits.extend(prepared.load_split(name) for name in ("train", "valid"))
        return splits

    def train(run_config: Config, searched: Optional[tuple] = None, name: Optional[str] = None) -> list[StageResult]:
        if run_config.ray.num_workers == 0:  # in this process, on the splits in memory (small data)
            return run_all_in_process(run_config, prepared, *in_memory(), log=log, searched=searched)
        return run_on_ray_train(run_config, prepared, log, output=destination, options=loop_options,
                                searched=searched, name=name)

    study, final_config, searched = None, config, None
    if config.tune.enabled:
        connect(config.ray)
        study = run_study(config, prepared, train_storage, log)
        final_config, searched = study.best_config, study.searched
        log(f"study: best {study.best.overrides} ({study.metric} {study.best.score:.5f}); finishing from its search")
    trained = Trained(final_config, train(final_config, searched, f"{Path(study.directory).name}-best" if study
                                          else None), study=study)
    if config.report.reference == "uniform" and config.search.method != "uniform":  # UE is its own reference
        # the reference is one plain UE run, never a study of its own
        uniform_config = with_overrides(config, {"search.method": "uniform", "tune.enabled": False,
                                                 "prune.bytes_cr": None, "prune.bytes": None})
        trained.reference = (uniform_config, train(uniform_config)[0])
    return trained


def _entries(config: Config, trained: Trained, prepared: PreparedData, saved: list[SavedModel],
             chosen: ByteBudgetChoices, tests: list[dict]) -> list[ModelEntry]:
    """One report entry per budget (a byte budget: the candidate validation chose, with every candidate)."""
    order = chosen.reported_order(trained.results)
    entries = [model_entry(trained.config, prepared, trained.results[i], tests[i], saved[i]) for i, _ in order]
    held = budget_choice_rows(config)
    for entry, (_, budget) in zip(entries, order):
        entry.budget = budget
        if budget in chosen.groups:
            limit = entry.budget_bytes = chosen.limits[budget]
            entry.within_budget = entry.bytes.embedding <= limit
            entry.candidates = [{**{k: v for k, v in row.items() if k != "index"}, "test": tests[row["index"]]}
                                for row in chosen.groups[budget]]
            entry.chosen_on = (f"the validation rows held from α ({held[0]:.0%}, prune.choice_fraction)" if held
                               else "the validation split")
    return entries


def _test_metrics(config: Config, trained: Trained, prepared: PreparedData, saved: list[SavedModel]) -> list[dict]:
    """The first and only read of the test split, for every final model at once, each as its artifact stores it
    (then grid's every K', each a point at its own size, and the reference last)."""
    results = trained.results
    extra = [(i, name, _built(trained.config, prepared, state)) for i, r in enumerate(results)
             for name, state in (r.candidate_states or {}).items()]
    reference = [trained.reference[1].model] if trained.reference else []
    models = [s.model for s in saved] + [model for *_, model in extra] + reference
    tests = evaluate_on_test(models, prepared, config.task, config.train.batch_size)
    for (i, name, model), metrics in zip(extra, tests[len(results):]):
        row = next(c for c in results[i].candidates if c["name"] == name)
        row.update(test=metrics, bytes=embedding_bytes_of(model))  # each K' at its own size, counted alike
    return tests


def _top_artifacts(trained: Trained, entries: list[ModelEntry], prepared: PreparedData, output: Path,
                   destination: str, top_level: bool) -> dict[str, str]:
    """The top level's files: the first budget's model (a byte budget's chosen candidate copied up), the run's
    config and vocabulary (what ``autosrh-ray predict`` needs beside a model) and the searched α."""
    artifacts = dict(entries[0].artifacts)
    if not top_level:
        artifacts = {"model": "model.pt", "dims": "dims.parquet"}
        for key, path in artifacts.items():
            with atomic.atomic_path(output / path) as tmp:
                shutil.copyfile(output / entries[0].artifacts[key], tmp)
    atomic.write_text(output / CONFIG_FILE, yaml.safe_dump(trained.config.to_dict(), sort_keys=False))
    artifacts.update(config=CONFIG_FILE, prepared=_relative(prepared.directory, destination),
                     frequencies=_relative(storage.join(prepared.directory, "frequencies.parquet"), destination))
    alpha = trained.results[0].searched_alpha
    if alpha is not None:
        with atomic.atomic_path(output / "alpha.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, alpha.numpy())
        artifacts["alpha"] = "alpha.npy"
    return artifacts


def _run(config: Config, destination: str, prepared: Optional[PreparedData], log: Log, loop_options,
         fresh: bool) -> dict:
    _check_paths(config, destination)
    # remote output: the driver's files are staged locally and uploaded at the end
    output = Path(tempfile.mkdtemp(prefix="autosrh-ray-output-") if storage.is_uri(destination) else destination)
    output.mkdir(parents=True, exist_ok=True)
    train_storage = storage_path(config, destination)
    if fresh:
        _forget(train_storage, log)
    t0 = time.perf_counter()
    if prepared is None:
        prepared = prepare(config, storage.join(destination, "data"), log)
    t_prepare = time.perf_counter() - t0
    validate_against_data(config, prepared.num_features)
    check_backbone(config, prepared.features.num_fields)
    check_byte_budgets(config.prune, config.search.K, prepared.num_features, config.search.L)
    config, notes = sized_for_data(config, prepared.rows.train, prepared.num_features)
    for note in notes:
        log(f"note: {note}")
    log(f"prepared: {prepared.num_features:,} features; {prepared.rows.describe()}")
    trained = _train(config, prepared, destination, train_storage, log, loop_options)
    results = trained.results

    # the first budget's model at the top level (a byte budget's candidates each in models/<tag>/)
    top_level = not (results[0].budget and results[0].budget.group)
    saved = [_save_model(trained.config, prepared, result, output,
                         "" if i == 0 and top_level else f"models/{result.budget.tag}/")
             for i, result in enumerate(results)]
    chosen = byte_budget_choices(results, saved, prepared, config.task, config.train.batch_size,
                                 budget_choice_rows(config))
    tests = _test_metrics(config, trained, prepared, saved)
    entries = _entries(config, trained, prepared, saved, chosen, tests)
    top = dataclasses.replace(entries[0], extras=dict(entries[0].extras),
                              artifacts=_top_artifacts(trained, entries, prepared, output, destination, top_level))
    # the contract's keys; a study's own time is study.seconds (and part of total)
    # stages reused from an earlier run count the seconds they took then: total is never less than their sum
    wall = time.perf_counter() - t0
    top.timings_s = {"prepare": t_prepare, **entries[0].timings_s,
                     "total": max(wall, t_prepare + sum(entries[0].timings_s.values()))}
    r = prepared.rows
    report = Report(top, entries, RowsReport(r.read, r.train, r.valid, r.test, r.skipped, dict(r.skipped_by_reason),
                                             dict(r.skipped_by_split)),
                    wall_s_this_run=wall)  # less than total when stages were reused from an earlier run
    if trained.reference:
        uniform_config, result = trained.reference
        ue = _save_model(uniform_config, prepared, result, output, "reference/")
        report.reference = model_entry(uniform_config, prepared, result, tests[-1], ue)
    if trained.study:
        report.study = trained.study.to_json()
    if config.report.plots:
        alpha = results[0].searched_alpha if method_of(config.search.method).soft_selection else None
        write_report_md(report, prepared, results[0].model, alpha, output, trained.study)
        top.artifacts["report_md"] = "report.md"
    written = report.to_json()
    atomic.write_text(output / "report.json", json.dumps(written, indent=1))
    if storage.is_uri(destination):
        storage.copy_tree(output, destination)
        shutil.rmtree(output)
        log(f"uploaded the report and models to {destination}")
    return written


def prepare(config: Config, output: str | Path, log: Log = print) -> PreparedData:
    """The data stage on Ray Data: write (or reuse) the prepared directory for ``config`` (under the stall
    watchdog, as :func:`run`)."""

    destination = storage.absolute(output)
    return _supervised(config, destination, lambda: prepare_on_ray(config, destination, log=beating(log)))
