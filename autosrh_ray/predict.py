"""``autosrh-ray predict``: score raw rows with a finished run's compact model.

The run's output directory holds what it takes: ``config.yaml`` (how to read the dataset's raw format),
the prepared vocabulary (``data/``: value → id per field, numerical scaling) and the model artifact, loaded as a
:class:`~autosrh_ray.packed.PackedEmbedding` (the kept entries only, never a dense M×K table). Input rows are
read in the dataset's own format, piece by piece (a file, a directory of shards or a glob; text or Parquet),
parsed and encoded exactly as ``prepare`` does — a categorical value the vocabulary does not hold maps to its
field's out-of-vocabulary row — and scored in batches; one output row per good input row: its position in the
input (file index · 2^40 + line in the file, as ``prepare`` places rows: a single file's line number), its label
as read, and the score (probability for CTR, predicted rating for regression). Bad rows are
skipped and counted (``dataset.on_bad_rows: error`` stops at the first, naming file and line), so
rows read = rows scored + rows skipped. :func:`predict` streams in one process (memory holds one piece and the
model); :func:`predict_on_ray` (``--ray``) scores input chunks as Ray Data tasks side by side, one Parquet part
per chunk, for inputs too big for one core.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from . import storage
from .artifact import load_model
from .config import ConfigError, load_config
from .data.errors import DataError
from .data.prepared import PreparedData
from .data.readers import layout_for, parse_chunk
from .data.vocabulary import encode_fields
from .workflow import CONFIG_FILE

Log = Callable[[str], None]


@dataclass
class PredictSummary:
    """What a predict run read, scored and skipped (``read == scored + skipped``)."""

    read: int = 0
    scored: int = 0
    skipped: int = 0
    skipped_by_reason: dict = field(default_factory=dict)


def run_directory(model: Path) -> tuple[Path, Path]:
    """(the run's output directory, the model file) for ``--model``: a run directory, a model folder inside it
    (``models/cr20``, ``reference``) or a ``model.pt``."""
    file = model / "model.pt" if model.is_dir() else model
    if not file.is_file():
        raise ConfigError("--model", f"no model.pt at {model}")
    for parent in file.parents:
        if (parent / CONFIG_FILE).is_file():
            return parent, file
    raise ConfigError("--model", f"no {CONFIG_FILE} beside {file} or above it: not a run's output directory")


def _chunks(layout, files):
    from .data.inputs import placed_text_chunks, plan_parquet_chunks

    return plan_parquet_chunks(files) if layout.kind == "parquet" else placed_text_chunks(files, layout.header)


SCHEMA = pa.schema([("position", pa.int64()), ("label", pa.float32()), ("score", pa.float64())])


def _writer(path: Path, csv: bool):
    return pacsv.CSVWriter(str(path), SCHEMA) if csv else pq.ParquetWriter(str(path), SCHEMA)


@dataclass
class Scorer:
    """Everything scoring needs, loaded once per process: how to read rows, the vocabulary, the model."""

    config: object
    layout: object
    space: object
    net: torch.nn.Module
    batch_size: int

    @property
    def classify(self) -> bool:
        return self.config.task == "classification"

    @torch.no_grad()
    def score_chunk(self, chunk, summary: PredictSummary) -> Iterator[pa.Table]:
        """Scored tables (position, label, score) of one input chunk; bad rows counted into ``summary``."""
        for parsed in parse_chunk(self.layout, chunk):
            bad = len(parsed.bad_positions)
            summary.read += parsed.num_rows + bad
            if bad:
                if self.config.dataset.on_bad_rows == "error":
                    raise DataError(f"{parsed.first_bad[1]} (set dataset.on_bad_rows: skip to skip such rows)")
                summary.skipped += bad
                for reason in parsed.bad_reasons:
                    summary.skipped_by_reason[reason] = summary.skipped_by_reason.get(reason, 0) + 1
            if not parsed.num_rows:
                continue
            _, columns = encode_fields(parsed, self.layout, self.config.numeric_mode)
            ids, values = self.space.encode(columns)
            b = self.batch_size
            scores = np.concatenate([_score(self.net, ids[i:i + b], values[i:i + b], self.classify)
                                     for i in range(0, len(ids), b)])
            summary.scored += parsed.num_rows
            yield pa.table({"position": parsed.positions, "label": parsed.labels, "score": scores}, schema=SCHEMA)


def load_scorer(model: str | Path, input_path: str, batch_size: int) -> tuple[Scorer, list[str]]:
    """The scorer of a finished run's model (``--model``) for the rows of ``input_path``, and the input files."""
    from .data.inputs import list_files

    run, model_file = run_directory(Path(model))
    config = load_config(run / CONFIG_FILE, [f"dataset.path={input_path}"])
    if config.dataset.name == "synthetic":
        raise ConfigError("--model", "the run trained on the embedded synthetic dataset, which has no raw rows to "
                                     "score (autosrh-ray generate writes them as Criteo shards)")
    space = PreparedData.load(_prepared_dir(run)).features
    files = list_files(input_path, "--input")
    return Scorer(config, layout_for(config, files), space, load_model(model_file), batch_size), files


def predict(model: str | Path, input_path: str, output: str | Path, batch_size: int = 8192,
            log: Log = print) -> PredictSummary:
    """Score every row of ``input_path`` with the run's model in this process, streaming; write ``output``
    (``.parquet`` or ``.csv``)."""
    scorer, files = load_scorer(model, input_path, batch_size)
    summary = PredictSummary()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    writer = _writer(tmp, output.suffix.lower() == ".csv")
    try:
        for chunk in _chunks(scorer.layout, files):
            for table in scorer.score_chunk(chunk, summary):
                writer.write_table(table)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(output)
    log(f"scored {summary.scored:,} of {summary.read:,} rows (skipped {summary.skipped:,}) → {output.resolve()}")
    return summary


_SCORERS: dict = {}


def _score_chunks(batch: pa.Table, model: str, input_path: str, batch_size: int, output: str) -> pa.Table:
    """Ray Data ``map_batches`` body: chunk descriptors in, one Parquet part per chunk written, counts out."""
    from .data.inputs import Chunk

    key = (model, input_path, batch_size)
    if key not in _SCORERS:  # one model per worker process, not one per chunk
        _SCORERS.clear()
        _SCORERS[key] = load_scorer(model, input_path, batch_size)[0]
    scorer = _SCORERS[key]
    out = []
    for item in batch.to_pylist():
        chunk = Chunk.from_item(item)
        summary = PredictSummary()
        fs, path = storage.resolve(storage.join(output, f"part-{chunk.index:06d}.parquet"))
        with pq.ParquetWriter(path, SCHEMA, filesystem=fs) as writer:
            for table in scorer.score_chunk(chunk, summary):
                writer.write_table(table)
        out.append({"read": summary.read, "scored": summary.scored, "skipped": summary.skipped,
                    "reasons": json.dumps(summary.skipped_by_reason)})
    return pa.Table.from_pylist(out, schema=pa.schema([("read", pa.int64()), ("scored", pa.int64()),
                                                      ("skipped", pa.int64()), ("reasons", pa.string())]))


def predict_on_ray(model: str | Path, input_path: str, output: str, batch_size: int = 8192,
                   address: str = "local", log: Log = print) -> PredictSummary:
    """Score big inputs on Ray Data: one task per input chunk (64 MiB of text, a Parquet row group), each writing
    ``output/part-<chunk>.parquet`` (a local directory or a URI); ``position`` keeps every row's place."""
    from .config import RayConfig
    from .data.chunk_dataset import chunk_dataset
    from .data.inputs import CHUNK_BYTES
    from .data.prepare import plan_chunks
    from .runtime import connect

    model = str(Path(model).resolve())
    scorer, files = load_scorer(model, input_path, batch_size)  # fails here, in the driver, on a bad --model
    connect(RayConfig(address=address))
    output = storage.absolute(output)
    storage.remove(output)
    storage.makedirs(output)
    chunks = plan_chunks(scorer.config, scorer.layout, files, CHUNK_BYTES, 0)  # cut files' lines counted on Ray
    ds = chunk_dataset(chunks)
    ds = ds.map_batches(_score_chunks, batch_size=1, batch_format="pyarrow", fn_kwargs=dict(
        model=model, input_path=input_path, batch_size=batch_size, output=output))
    summary = PredictSummary()
    for row in ds.iter_rows():
        summary.read += int(row["read"])
        summary.scored += int(row["scored"])
        summary.skipped += int(row["skipped"])
        for reason, n in json.loads(row["reasons"]).items():
            summary.skipped_by_reason[reason] = summary.skipped_by_reason.get(reason, 0) + n
    log(f"scored {summary.scored:,} of {summary.read:,} rows (skipped {summary.skipped:,}) in {len(chunks)} "
        f"parts → {output}")
    return summary


def _prepared_dir(run: Path) -> str:
    """The run's prepared data (its vocabulary): where report.json says (relative to the run, an absolute path or
    a URI), else ``<run>/data``."""
    report = run / "report.json"
    artifacts = json.loads(report.read_text()).get("artifacts", {}) if report.is_file() else {}
    prepared = artifacts.get("prepared", "data")
    return prepared if storage.is_uri(prepared) else str((run / prepared).resolve())


def _score(net, ids: np.ndarray, values: np.ndarray, classify: bool) -> np.ndarray:
    out = net(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
              torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
    return (torch.sigmoid(out) if classify else out).double().numpy()
