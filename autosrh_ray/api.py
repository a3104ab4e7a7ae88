"""The public Python API: run a workflow, load a finished run's model, score rows held in memory.

Example::

    import autosrh_ray

    result = autosrh_ray.run("workflows/quickstart.yaml", "runs/quickstart", {"prune.cr": [10, 20]})
    print(result.report.top.test, [m.budget for m in result.report.models])
    model = autosrh_ray.load_model("runs/quickstart")          # or result.model("cr20")
    scores = model.score(rows)      # a pandas DataFrame or a pyarrow Table in the dataset's raw columns

Both work with a Ray the caller started (``ray.init(address="local")`` in a notebook; the run attaches to it, its
``ray.address`` permitting) and without one (a private local Ray of the run's own).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from . import storage, workflow
from .artifact.format import load_model as load_artifact, tensor_bytes
from .config import CONFIG_FILE, Config, ConfigError, load_config, with_overrides
from .data.prepared import PreparedData
from .logs import Log
from .predict import Scorer, chunks_of, input_layout, prepared_directory, run_directory
from .report.schema import Report

Rows = Any  # a pandas DataFrame or a pyarrow Table


class Model:
    """A finished run's compact model, with what scoring raw rows needs (the run's config and vocabulary).

    Attributes:
        module: the loaded ``torch.nn.Module`` (:class:`~autosrh_ray.engine.model.EmbeddingModel`: the kept entries
            as stored, the first-order term, the backbone), in eval mode, for serving it yourself: it takes
            ``(ids (B, F) int64, values (B, F) float32)`` as ``prepare`` encodes rows and returns logits (B,).
        bytes: the embedding's bytes as the artifact stores them (what byte budgets count).
        dims: the kept dimensions of every feature id (M,).
        path: the model file.
    """

    def __init__(self, path: Path, config: Config, prepared: str, batch_size: int = 8192):
        self.path, self._config, self._batch_size = path, config, batch_size
        self.module = load_artifact(path)
        self._space = PreparedData.load(prepared).features
        embedding = self.module.embedding
        self.dims = embedding.kept_per_feature().cpu().numpy()
        payload = torch.load(path, map_location="cpu", weights_only=True)
        self.bytes = tensor_bytes([payload["embedding"], payload.get("projection") or {}])

    def score(self, rows: Rows) -> np.ndarray:
        """Score rows held in memory, encoded exactly as ``autosrh-ray predict`` encodes them (a value the
        vocabulary does not hold gets its field's out-of-vocabulary row).

        Args:
            rows: a pandas DataFrame or a pyarrow Table whose columns are the dataset's raw columns (Criteo:
                ``I1..I13``, ``C1..C26``; a run on the synthetic dataset: its ``I``/``C`` columns; a tabular
                dataset: its ``dataset.categorical`` and ``dataset.numerical`` columns); the label column may be
                left out.

        Returns:
            One score per row, in order (float64): the click probability for CTR, the predicted rating for
            regression.

        Raises:
            ConfigError: a field column is missing.
            DataError: a row cannot be read (names the row).
        """
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
        config = dataclasses.replace(self._config, dataset=dataclasses.replace(self._config.dataset,
                                                                             on_bad_rows="error"))
        with tempfile.TemporaryDirectory(prefix="autosrh-ray-rows-") as tmp:
            path = _write_raw(table, config, Path(tmp))
            layout, labelled = input_layout(config, [path])
            scorer = Scorer(config, layout, self._space, self.module, self._batch_size, labelled)
            summary = scorer.summary()
            scored = [t for chunk in chunks_of(layout, [path]) for t in scorer.score_chunk(chunk, summary)]
        if not scored:
            return np.zeros(0)
        out = pa.concat_tables(scored)
        return out.column("score").to_numpy()[np.argsort(out.column("position").to_numpy(), kind="stable")]


@dataclass(frozen=True)
class RunResult:
    """A finished run.

    Attributes:
        report: ``report.json`` as typed dataclasses (:class:`~autosrh_ray.report.schema.Report`): ``top`` is the
            first budget's model, ``models`` one entry per budget, ``reference`` the UE reference;
            ``report.to_json()`` gives the JSON form.
        output: the run's output directory (or URI).
    """

    report: Report
    output: str

    def model(self, budget: Optional[str] = None) -> Model:
        """The final model of ``budget`` (a name of ``report.models``: ``cr10``, ``bytes_cr40``; default: the
        first budget's), loaded for scoring. The output must be a local directory."""
        entries = self.report.models
        entry = entries[0] if budget is None else next((e for e in entries if e.budget == budget), None)
        if entry is None:
            raise ConfigError("budget", f"no model for budget {budget!r}; the run has "
                                        f"{', '.join(e.budget for e in entries)}")
        return load_model(Path(self.output) / entry.artifacts["model"])


def run(workflow_config: Union[str, os.PathLike, Config], output: Union[str, os.PathLike],
        overrides: Optional[Mapping[str, Any]] = None, *, fresh: bool = False, log: Log = print) -> RunResult:
    """Run the whole workflow (prepare → [study] → search → prune → retrain → evaluate → report).

    Args:
        workflow_config: a workflow YAML path, or a :class:`~autosrh_ray.config.Config`.
        output: the output directory (a local path or a URI such as ``s3://bucket/run``).
        overrides: dotted config keys and their values, e.g. ``{"prune.cr": [10, 20], "search.K": 32}``.
        fresh: start over instead of resuming what an earlier run into ``output`` finished.
        log: where the run's lines go.

    Returns:
        The :class:`RunResult` (the report also written as ``output/report.json``).

    Raises:
        ConfigError: a bad key or value, named in one line.
    """
    config = workflow_config if isinstance(workflow_config, Config) else load_config(workflow_config)
    if overrides:
        config = with_overrides(config, dict(overrides))
    destination = storage.absolute(output)
    report = workflow.run(config, destination, log=log, fresh=fresh)
    return RunResult(Report.from_json(report), destination)


def load_model(path: Union[str, os.PathLike], batch_size: int = 8192) -> Model:
    """Load a finished run's model for scoring.

    Args:
        path: the run's output directory (its first budget's model), a model folder in it (``models/cr20``,
            ``reference``) or a ``model.pt``.
        batch_size: rows scored at a time.

    Returns:
        The :class:`Model`.

    Raises:
        ConfigError: not a run's output, or the backbone cannot be imported here (``model.name``).
    """
    run_dir, model_file = run_directory(Path(path))
    return Model(model_file, load_config(run_dir / CONFIG_FILE), prepared_directory(run_dir), batch_size)


def _write_raw(table: pa.Table, config: Config, directory: Path) -> str:
    """``table`` as a file in the dataset's raw format (what ``predict`` reads): text with the format's delimiter
    (and header, where it has one), or Parquet for a Parquet dataset; columns the format has but the rows lack are
    left empty, a missing label column is filled with 0 (scores do not read it)."""
    layout, _ = input_layout(config, [_probe_file(table, config, directory)])
    columns = {}
    missing = [c for c in layout.categorical + layout.numerical if c not in table.column_names]
    if missing:
        raise ConfigError("rows", f"the rows lack the field column(s) {', '.join(missing)} (they have "
                                  f"{', '.join(table.column_names)})")
    for name in layout.columns or table.column_names:
        if name in table.column_names:
            columns[name] = table.column(name)
        elif name == layout.label:
            columns[name] = pa.array(np.zeros(table.num_rows))
        else:
            columns[name] = pa.nulls(table.num_rows, pa.string())
    if layout.kind == "parquet":
        path = directory / "rows.parquet"
        pq.write_table(pa.table({**columns, **{c: table.column(c) for c in table.column_names if c not in columns}}),
                       path)
        return str(path)
    path = directory / "rows.txt"
    options = pacsv.WriteOptions(include_header=layout.header, delimiter=layout.delimiter,
                                 quoting_style="needed" if layout.quoted else "none")
    pacsv.write_csv(pa.table(columns), path, options)
    return str(path)


def _probe_file(table: pa.Table, config: Config, directory: Path) -> str:
    """A file whose header (or schema) names the rows' columns, for formats whose layout is read from it."""
    if config.dataset.name == "tabular" and (config.dataset.format == "parquet"):
        path = directory / "columns.parquet"
        pq.write_table(table.slice(0, 0), path)
        return str(path)
    path = directory / "columns.txt"
    delimiter = "\t" if config.dataset.format == "tsv" else ","
    path.write_text(delimiter.join(table.column_names) + "\n")
    return str(path)
