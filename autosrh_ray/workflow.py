"""prepare → search → prune → retrain → evaluate → report.json (SPEC.md's contract).

:func:`run` is the user-facing workflow: Ray Data prepares, Ray Train searches and retrains (local Ray by
default, ``ray.address`` to attach to a cluster). The stage graph itself is :mod:`.pipeline`, with
:func:`~.pipeline.run_in_process` as the engine's in-process reference (tests, benchmarks).

``search.method``:
  * ``autosrh``: bi-level search of α and Θ, prune |E ⊙ α| to the CR, retrain with the mask;
  * ``uniform`` (UE): train a uniform embedding with early stopping (no α, no pruning);
  * ``magnitude``: train UE with early stopping, prune |E| to the CR, retrain with the mask.
Every training stage stops when its validation loss stops improving (``search.patience`` / ``train.patience``,
capped by ``*.max_epochs``). The test split is read once, after the final model is chosen on validation.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .artifact import save_model
from .batch import Batch
from .config import Config, validate_against_data
from .data.prepared import PreparedData, split_from_columns
from .models import EmbeddingModel
from .pipeline import StageResult
from .prune import kept_dims
from .training import evaluate

Log = Callable[[str], None]

ALPHA_ON_VALID_NOTE = ("α was fitted on the validation split (search.alpha_data: validation, as in the paper), so "
                       "the validation metrics of this model are optimistic; read its quality from test")


def _write_dims(model: EmbeddingModel, prepared: PreparedData, path: Path) -> None:
    """Per-feature kept dimension indices (the mixed dimension scheme D) with field and frequency."""
    emb = model.embedding
    mask = emb.mask.bool() if emb.mask is not None else torch.ones(emb.num_features, emb.dim, dtype=torch.bool)
    dims = [np.flatnonzero(row).astype(np.int16) for row in mask.cpu().numpy()]
    feats = prepared.features
    pq.write_table(pa.table({
        "id": pa.array(np.arange(feats.num_features)),
        "field": pa.array([feats.fields[f].name for f in feats.field_of]),
        "block": pa.array(emb.block_of.cpu().numpy()),
        "frequency": pa.array(feats.frequencies),
        "kept_dims": pa.array(kept_dims(mask).cpu().numpy()),
        "dims": pa.array([d.tolist() for d in dims], type=pa.list_(pa.int16())),
    }), path)


def build_report(config: Config, prepared: PreparedData, stages: StageResult, valid_metrics: dict,
                 test_metrics: dict, timings: dict, artifacts: dict, artifact_bytes: int) -> dict:
    m, k = prepared.num_features, config.search.K
    method = config.search.method
    emb = stages.model.embedding
    uniform = m * k
    kept = int(emb.mask.sum()) if emb.mask is not None else uniform  # counted from the installed mask
    first = stages.search
    report = {
        "method": method,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "task": config.task,
        "K": k,
        "L": config.search.L if method == "autosrh" else 1,
        "cr_target": 1 if method == "uniform" else config.prune.cr,
        "cr_achieved": uniform / kept,
        "num_features": m,
        "params": {"uniform": uniform, "kept": kept, "linear": m},
        "valid": valid_metrics,
        "test": test_metrics,
        "valid_optimistic": method == "autosrh" and config.search.alpha_data == "validation",
        "rows": {
            "read": prepared.rows.read, "train": prepared.rows.train, "valid": prepared.rows.valid,
            "test": prepared.rows.test, "skipped": prepared.rows.skipped,
            "skipped_by_reason": dict(prepared.rows.skipped_by_reason),
            "skipped_by_split": dict(prepared.rows.skipped_by_split),
        },
        "timings_s": timings,
        "artifacts": artifacts,
        "artifact_bytes": {"compact_model": artifact_bytes, "dense_embedding": m * k * 4},
        "stages": {name: result.summary() for name, result in stages.stages.items()},
        "epochs": {"search": first.epochs if first else 0, "retrain": stages.retrain.epochs},
        "history": {"search": first.history if first else [], "retrain": stages.retrain.history},
    }
    if report["valid_optimistic"]:
        report["notes"] = [ALPHA_ON_VALID_NOTE]
    if emb.alpha is not None:
        report["alpha"] = emb.alpha.detach().cpu().tolist()
    return report


def iter_split_batches(prepared: PreparedData, split: str, batch_size: int) -> Iterator[Batch]:
    """Stream one split's Parquet shards in the driver, one batch at a time (never the whole split in memory)."""
    for path in prepared.split_paths(split):
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            cols = {name: col.to_numpy(zero_copy_only=False)
                    for name, col in zip(record_batch.schema.names, record_batch.columns)}
            encoded = split_from_columns(cols, prepared.features.num_fields)
            yield Batch.from_numpy(encoded.ids, encoded.values, encoded.labels)


def run(config: Config, output: str | Path, prepared: Optional[PreparedData] = None, log: Log = print,
        loop_options=None) -> dict:
    """The whole workflow: prepare on Ray Data, search/prune/retrain on Ray Train, then the one test evaluation.

    Writes ``output/report.json`` and the artifacts; returns the report. ``loop_options``
    (:class:`~autosrh_ray.distributed.stages.LoopOptions`) are test hooks for the Train loops.
    """
    from .distributed.stages import run_on_ray_train

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if prepared is None:
        prepared = prepare(config, output / "data")
    t_prepare = time.perf_counter() - t0
    validate_against_data(config, prepared.num_features)
    log(f"prepared: M={prepared.num_features} features, rows={prepared.rows}")
    stages = run_on_ray_train(config, prepared, log, output=output, options=loop_options)
    metric_names = ("auc", "logloss") if config.task == "classification" else ("mse",)
    valid_metrics = {k: stages.retrain.best_valid[k] for k in metric_names}  # whole split, at the chosen epoch
    # first and only read of the test split
    test_metrics = evaluate(stages.model, iter_split_batches(prepared, "test", config.train.batch_size), config.task)
    artifacts = {"model": "model.pt", "dims": "dims.parquet",
                 "frequencies": os.path.relpath(Path(prepared.directory) / "frequencies.parquet", output)}
    artifact_bytes = save_model(stages.model, output / artifacts["model"], config.model.name,
                                prepared.features.num_fields, config.model.hidden, config.model.dropout)
    _write_dims(stages.model, prepared, output / artifacts["dims"])
    timings = {"prepare": t_prepare, **stages.timings, "total": time.perf_counter() - t0}
    report = build_report(config, prepared, stages, valid_metrics, test_metrics, timings, artifacts, artifact_bytes)
    (output / "report.json").write_text(json.dumps(report, indent=1))
    return report


def prepare(config: Config, output: str | Path) -> PreparedData:
    """The data stage on Ray Data: write (or reuse) the prepared directory for ``config``."""
    from .data.prepare import prepare as prepare_on_ray

    return prepare_on_ray(config, output)
