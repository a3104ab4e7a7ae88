"""``autosrh-ray predict``: score raw rows with a finished run's compact model.

The run's output directory holds what it takes: ``config.yaml`` (how to read the dataset's raw format),
the prepared vocabulary (``data/``: value → id per field, numerical scaling) and the model artifact, loaded as a
:class:`~autosrh_ray.artifact.CompactLookup` (the kept entries only, never a dense M×K table). Input rows are
read in the dataset's own format, piece by piece (a file, a directory of shards or a glob; text or Parquet),
parsed and encoded exactly as ``prepare`` does — a categorical value the vocabulary does not hold maps to its
field's out-of-vocabulary row — and scored in batches; one output row per good input row: its position in the
input, its label as read, and the score (probability for CTR, predicted rating for regression). Bad rows are
skipped and counted (``dataset.on_bad_rows: error`` stops at the first, naming file and line), so
rows read = rows scored + rows skipped. Single process, streaming: memory holds one piece and the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

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
    from .data.inputs import assign_positions, count_chunk_lines, plan_parquet_chunks, plan_text_chunks

    if layout.kind == "parquet":
        return plan_parquet_chunks(files)
    chunks = plan_text_chunks(files, layout.header)
    return assign_positions(chunks, [count_chunk_lines(c) for c in chunks], layout.header)


SCHEMA = pa.schema([("position", pa.int64()), ("label", pa.float32()), ("score", pa.float64())])


def _writer(path: Path, csv: bool):
    return pacsv.CSVWriter(str(path), SCHEMA) if csv else pq.ParquetWriter(str(path), SCHEMA)


@torch.no_grad()
def predict(model: str | Path, input_path: str, output: str | Path, batch_size: int = 8192,
            log: Log = print) -> PredictSummary:
    """Score every row of ``input_path`` with the run's model; write ``output`` (``.parquet`` or ``.csv``)."""
    from .data.inputs import list_files

    run, model_file = run_directory(Path(model))
    config = load_config(run / CONFIG_FILE, [f"dataset.path={input_path}"])
    if config.dataset.name == "synthetic":
        raise ConfigError("--model", "the run trained on the embedded synthetic dataset, which has no raw rows to "
                                     "score (autosrh-ray generate writes them as Criteo shards)")
    space = PreparedData.load(_prepared_dir(run)).features
    files = list_files(input_path, "--input")
    layout = layout_for(config, files)
    net = load_model(model_file)
    classify = config.task == "classification"
    summary = PredictSummary()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    writer = _writer(tmp, output.suffix.lower() == ".csv")
    try:
        for chunk in _chunks(layout, files):
            for parsed in parse_chunk(layout, chunk):
                bad = len(parsed.bad_positions)
                summary.read += parsed.num_rows + bad
                if bad:
                    if config.dataset.on_bad_rows == "error":
                        raise DataError(f"{parsed.first_bad[1]} (set dataset.on_bad_rows: skip to skip such rows)")
                    summary.skipped += bad
                    for reason in parsed.bad_reasons:
                        summary.skipped_by_reason[reason] = summary.skipped_by_reason.get(reason, 0) + 1
                if not parsed.num_rows:
                    continue
                _, columns = encode_fields(parsed, layout, config.numeric_mode)
                ids, values = space.encode(columns)
                scores = np.concatenate([_score(net, ids[i:i + batch_size], values[i:i + batch_size], classify)
                                         for i in range(0, len(ids), batch_size)])
                writer.write_table(pa.table({"position": parsed.positions, "label": parsed.labels,
                                             "score": scores}, schema=SCHEMA))
                summary.scored += parsed.num_rows
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(output)
    log(f"scored {summary.scored:,} of {summary.read:,} rows (skipped {summary.skipped:,}) → {output.resolve()}")
    return summary


def _prepared_dir(run: Path) -> Path:
    """The run's prepared data (its vocabulary): where report.json says, else ``<run>/data``."""
    import json

    report = run / "report.json"
    artifacts = json.loads(report.read_text()).get("artifacts", {}) if report.is_file() else {}
    return (run / artifacts.get("prepared", "data")).resolve()


def _score(net, ids: np.ndarray, values: np.ndarray, classify: bool) -> np.ndarray:
    out = net(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
              torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))
    return (torch.sigmoid(out) if classify else out).double().numpy()
