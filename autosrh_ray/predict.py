"""``autosrh-ray predict``: score raw rows with a finished run's compact model.

The run's output directory holds what it takes: ``config.yaml`` (how to read the dataset's raw format),
the prepared vocabulary (``data/``: value → id per field, numerical scaling) and the model artifact, loaded as a
:class:`~autosrh_ray.engine.packed.PackedEmbedding` (the kept entries only, never a dense M×K table). Input rows are
read in the dataset's own format, piece by piece (a file, a directory of shards or a glob; text or Parquet),
parsed and encoded exactly as ``prepare`` does — a categorical value the vocabulary does not hold maps to its
field's out-of-vocabulary row — and scored in batches; one output row per good input row: its position in the
input (file index · 2^40 + line in the file, as ``prepare`` places rows: a single file's line number), its label
as read, and the score (probability for CTR, predicted rating for regression). Bad rows are
skipped and counted (``dataset.on_bad_rows: error`` stops at the first, naming file and line), so
rows read = rows scored + rows skipped. :func:`predict` streams in one process (memory holds one piece and the
model); :func:`predict_on_ray` (``--ray``) scores input chunks as Ray Data tasks side by side, one Parquet part
per chunk, for inputs too big for one core.

Rows to score need not carry the label (:func:`input_layout`): a headerless text format (Criteo dac, KDD12,
Amazon) whose first line has one column fewer than the format, or a ``tabular`` file without the
``dataset.label`` column, is read without it — parsed as the labelled format with a placeholder label put in
front of every line (or beside the Parquet columns), so parsing stays the training reader's — and the output then
has no ``label`` column. A run on the embedded synthetic dataset scores rows in the Criteo dac format that
``autosrh-ray generate`` writes (its ``I1..In`` and ``C1..Cc`` columns; the rest are ignored).

What the model has not seen is counted per field (:class:`PredictSummary`, the log and the Parquet output's
``autosrh_ray.predict`` metadata): categorical values scored with their field's out-of-vocabulary row, and
numerical values far outside the training range — under ``numeric: scale`` below the training minimum or above
the maximum by more than the range's width (:data:`FAR_RANGE`; for data prepared before the range was recorded,
more than :data:`FAR_STD` training standard deviations from the mean), under ``bucketize`` a bucket training
never kept.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from . import storage
from .artifact.format import load_model
from .config import CONFIG_FILE, ConfigError, RayConfig, load_config
from .data.chunk_dataset import chunk_dataset
from .data.errors import DataError
from .data.inputs import (CHUNK_BYTES, Chunk, first_line, iter_pieces, list_files, placed_text_chunks,
                          plan_parquet_chunks)
from .data.prepare import plan_chunks
from .data.prepared import PreparedData
from .data.readers import CRITEO_COLUMNS, Layout, Parsed, assemble_rows, layout_for, parse_chunk, parse_text
from .data.vocabulary import encode_fields
from .logs import Log
from .runtime import connect

FAR_RANGE = 1.0  # numeric: scale — "far out": beyond the training min or max by more than the range's width
FAR_STD = 10.0  # … or, where the range was not recorded, more than this many training std from the training mean
NO_LABEL = "__no_label__"  # the placeholder label column of rows that have none
METADATA_KEY = "autosrh_ray.predict"  # the Parquet output's key-value metadata: the summary as JSON


def far_out(stats, column) -> np.ndarray:
    """Which values of a numerical field lie far outside its training range (``FAR_RANGE``; ``FAR_STD`` where
    the range was not recorded); missing values never do."""
    x = np.asarray(column.to_numpy(zero_copy_only=False) if isinstance(column, (pa.Array, pa.ChunkedArray))
                   else column, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if stats.low is not None:
            width = FAR_RANGE * (stats.high - stats.low)
            return (x < stats.low - width) | (x > stats.high + width)
        return np.abs(x - stats.mean) > FAR_STD * stats.std


def _add(counts: dict, key: str, n: int) -> None:
    if n:
        counts[key] = counts.get(key, 0) + int(n)


@dataclass
class PredictSummary:
    """What a predict run read, scored and skipped (``read == scored + skipped``); whether the rows carried a
    label; per field, the values scored with the field's out-of-vocabulary row (``oov_by_field``: categorical
    fields) and the numerical values far outside the training range (``out_of_range_by_field``)."""

    read: int = 0
    scored: int = 0
    skipped: int = 0
    skipped_by_reason: dict = field(default_factory=dict)
    labelled: bool = True
    oov_by_field: dict = field(default_factory=dict)
    out_of_range_by_field: dict = field(default_factory=dict)
    out_of_range_rule: str = ""

    def merge(self, other: "PredictSummary") -> None:
        """Add ``other``'s counts (a chunk's) to these."""
        self.read += other.read
        self.scored += other.scored
        self.skipped += other.skipped
        for mine, theirs in ((self.skipped_by_reason, other.skipped_by_reason), (self.oov_by_field, other.oov_by_field),
                             (self.out_of_range_by_field, other.out_of_range_by_field)):
            for key, n in theirs.items():
                _add(mine, key, n)
        self.labelled, self.out_of_range_rule = other.labelled, other.out_of_range_rule or self.out_of_range_rule

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "PredictSummary":
        return PredictSummary(**d)

    def _per_field(self, counts: dict) -> str:
        share = (lambda n: f" ({100 * n / self.scored:.1f}%)") if self.scored else (lambda n: "")
        return ", ".join(f"{name} {n:,}{share(n)}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))

    def lines(self) -> list[str]:
        """The summary lines after the ``scored …`` line: out-of-vocabulary values per field (always), and a
        warning line when numerical values lay far outside the training range."""
        oov = self._per_field(self.oov_by_field) or "none"
        out = [f"out-of-vocabulary values (scored with their field's OOV row), per field: {oov}"]
        if self.out_of_range_by_field:
            out.append(f"warning: numerical values far outside the training range ({self.out_of_range_rule}), "
                       f"per field: {self._per_field(self.out_of_range_by_field)}")
        if not self.labelled:
            out.append("the rows carry no label: the output has position and score only")
        return out


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


def chunks_of(layout, files):
    return plan_parquet_chunks(files) if layout.kind == "parquet" else placed_text_chunks(files, layout.header)


SCHEMA = pa.schema([("position", pa.int64()), ("label", pa.float32()), ("score", pa.float64())])
UNLABELLED_SCHEMA = pa.schema([("position", pa.int64()), ("score", pa.float64())])


def _writer(path: Path, as_csv: bool, schema: pa.Schema):
    return pacsv.CSVWriter(str(path), schema) if as_csv else pq.ParquetWriter(str(path), schema)


def _close(writer, summary: "PredictSummary") -> None:
    """Close an output writer; a Parquet file gets the summary as its key-value metadata first."""
    if isinstance(writer, pq.ParquetWriter):
        writer.add_key_value_metadata({METADATA_KEY: json.dumps(summary.to_dict())})
    writer.close()


def generated_layout(config) -> Layout:
    """How to read rows for a run on the embedded synthetic dataset: the Criteo dac text ``autosrh-ray generate``
    writes, its ``I1..In`` and ``C1..Cc`` columns being the synthetic fields (the other columns are ignored)."""
    syn = config.dataset.synthetic
    if syn.numerical_fields > 13 or syn.categorical_fields > 26:
        raise ConfigError("--model", "the run's synthetic fields do not fit the Criteo dac format that "
                                     "autosrh-ray generate writes (at most 13 numerical and 26 categorical)")
    return Layout("criteo", "text", CRITEO_COLUMNS, "label", "binary",
                  numerical=tuple(f"I{i + 1}" for i in range(syn.numerical_fields)),
                  categorical=tuple(f"C{i + 1}" for i in range(syn.categorical_fields)))


def _first_line_columns(path: str, layout: Layout) -> Optional[int]:
    """Columns on the first line of a headerless text file (quotes respected), None if it is empty."""

    line = first_line(path)
    if not line:
        return None
    delimiter = layout.delimiter
    row = next(csv.reader([line], delimiter=delimiter, quotechar='"') if layout.quoted
               else csv.reader([line], delimiter=delimiter, quoting=csv.QUOTE_NONE))
    return len(row)


def _without_label(layout: Layout, label: Optional[str]) -> Layout:
    """The layout of rows without the ``label`` column (None: the columns have none already): the placeholder
    label first, then the other columns in order."""
    return dataclasses.replace(layout, label=NO_LABEL, columns=(NO_LABEL, *[c for c in layout.columns if c != label]))


def _format_by_name(path: str) -> Optional[str]:
    """A tabular file's format when its name says it (``.parquet``/``.pq``, ``.csv``, ``.tsv``, also gzipped)."""
    lower = path.lower().removesuffix(".gz")
    for suffixes, fmt in (((".parquet", ".pq"), "parquet"), ((".csv",), "csv"), ((".tsv",), "tsv")):
        if lower.endswith(suffixes):
            return fmt
    return None


def input_layout(config, files: list[str]) -> tuple[Layout, bool]:
    """How to read the rows to score, and whether they carry the label.

    Headerless text (Criteo dac, KDD12, Amazon, the synthetic run's dac rows): by the first line's column count —
    the format's count, or one fewer (no label column). ``tabular``: by whether the header (or the Parquet
    schema) has ``dataset.label``. MovieLens and Avazu rows need their label column."""
    ds = config.dataset
    if ds.name == "synthetic":
        layout = generated_layout(config)
    elif ds.name == "tabular":
        named = _format_by_name(files[0])  # rows to score may come in another format than the training rows
        if named and named != ds.format:
            ds = dataclasses.replace(ds, format=named)
            config = dataclasses.replace(config, dataset=ds)
        try:
            return layout_for(config, files), True
        except ConfigError as err:
            if err.key != "dataset.label":
                raise
        features = [*ds.categorical, *ds.numerical]  # validation made sure there is one
        stand_in = dataclasses.replace(config, dataset=dataclasses.replace(ds, label=features[0]))
        return _without_label(layout_for(stand_in, files), None), False
    else:
        layout = layout_for(config, files)
    if layout.kind == "text" and not layout.header:
        if _first_line_columns(files[0], layout) == len(layout.columns) - 1:
            return _without_label(layout, layout.label), False
    return layout, True


_LINE_START = re.compile(rb"(?m)^(?=[^\r\n])")  # the start of every line that is not empty
_COLUMN_COUNT = re.compile(r"expected (\d+) columns(, got (\d+))?")


def _without_placeholder(message: str) -> str:
    """A bad row's message with column counts as in the input (the placeholder label not counted)."""
    def fix(m: re.Match) -> str:
        got = f", got {int(m[3]) - 1}" if m[2] else ""
        return f"expected {int(m[1]) - 1} columns{got}"
    return _COLUMN_COUNT.sub(fix, message)


def _parse_unlabelled(layout: Layout, chunk) -> Iterator[Parsed]:
    """Parsed pieces of a chunk whose rows have no label: each line gets the placeholder label in front (text),
    or a placeholder column (Parquet), and is parsed by the training reader."""

    if chunk.kind == "parquet":
        yield _parse_parquet_unlabelled(layout, chunk)
        return
    placeholder = b"0" + layout.delimiter.encode()
    for data, offset in iter_pieces(chunk):
        parsed = parse_text(_LINE_START.sub(placeholder, data), layout, chunk, offset)
        if parsed.first_bad is not None:
            parsed.first_bad = (parsed.first_bad[0], _without_placeholder(parsed.first_bad[1]))
        yield parsed


def _parse_parquet_unlabelled(layout: Layout, chunk) -> Parsed:
    """One row group of a Parquet file without the label column (as :func:`~.data.readers.parse_parquet`)."""

    wanted = list(dict.fromkeys([*layout.numerical, *layout.categorical]))
    table = pq.ParquetFile(storage.parquet_source(chunk.path)).read_row_group(chunk.start, columns=wanted)
    table = table.append_column(NO_LABEL, pa.array(np.zeros(table.num_rows), pa.float64()))
    local = np.arange(table.num_rows, dtype=np.int64)
    return assemble_rows(chunk.path, table, layout, local, chunk.first_line, chunk.first_position, [], "row ")


@dataclass
class Scorer:
    """Everything scoring needs, loaded once per process: how to read rows, the vocabulary, the model."""

    config: object
    layout: object
    space: object
    net: torch.nn.Module
    batch_size: int
    labelled: bool = True

    @property
    def classify(self) -> bool:
        return self.config.task == "classification"

    @property
    def schema(self) -> pa.Schema:
        return SCHEMA if self.labelled else UNLABELLED_SCHEMA

    def summary(self) -> PredictSummary:
        """An empty summary for this scorer's rows."""
        if self.config.numeric_mode == "bucketize":
            rule = "a bucket training never kept, scored with the field's OOV row"
        elif all(s is None or s.low is not None for s in self.space.numeric_stats):
            rule = "beyond the training min or max by more than the range's width"
        else:  # data prepared before the range was recorded
            rule = f"more than {FAR_STD:g} training std from the training mean"
        return PredictSummary(labelled=self.labelled, out_of_range_rule=rule)

    def _parsed(self, chunk) -> Iterator[Parsed]:
        return parse_chunk(self.layout, chunk) if self.labelled else _parse_unlabelled(self.layout, chunk)

    def count_unseen(self, ids: np.ndarray, columns: dict, summary: PredictSummary) -> None:
        """Count, per field, values scored with the field's OOV row and numerical values far outside the
        training range (see the module docstring); ``columns``: the encoded fields' raw columns."""
        encoder = self.space.encoder()
        numerical = set(self.layout.numerical_fields)
        for f, (name, codes) in enumerate(zip(encoder.names, encoder.fields)):
            if codes.categorical:
                _add(summary.out_of_range_by_field if name in numerical else summary.oov_by_field, name,
                     np.count_nonzero(ids[:, f] == codes.id))
            else:
                _add(summary.out_of_range_by_field, name, np.count_nonzero(far_out(self.space.numeric_stats[f],
                                                                                   columns[name])))

    @torch.no_grad()
    def score_chunk(self, chunk, summary: PredictSummary) -> Iterator[pa.Table]:
        """Scored tables (position, label, score) of one input chunk (position, score without a label); bad rows
        and unseen values counted into ``summary``."""
        for parsed in self._parsed(chunk):
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
            self.count_unseen(ids, columns, summary)
            b = self.batch_size
            scores = np.concatenate([_score(self.net, ids[i:i + b], values[i:i + b], self.classify)
                                     for i in range(0, len(ids), b)])
            summary.scored += parsed.num_rows
            out = {"position": parsed.positions, "label": parsed.labels, "score": scores}
            if not self.labelled:
                del out["label"]
            yield pa.table(out, schema=self.schema)


def load_scorer(model: str | Path, input_path: str, batch_size: int) -> tuple[Scorer, list[str]]:
    """The scorer of a finished run's model (``--model``) for the rows of ``input_path``, and the input files."""

    run, model_file = run_directory(Path(model))
    config = load_config(run / CONFIG_FILE, [f"dataset.path={input_path}"])  # a synthetic run ignores the path
    space = PreparedData.load(prepared_directory(run)).features
    files = list_files(input_path, "--input")
    layout, labelled = input_layout(config, files)
    return Scorer(config, layout, space, load_model(model_file), batch_size, labelled), files


def predict(model: str | Path, input_path: str, output: str | Path, batch_size: int = 8192,
            log: Log = print) -> PredictSummary:
    """Score every row of ``input_path`` with the run's model in this process, streaming; write ``output``
    (``.parquet`` or ``.csv``)."""
    scorer, files = load_scorer(model, input_path, batch_size)
    summary = scorer.summary()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    writer = _writer(tmp, output.suffix.lower() == ".csv", scorer.schema)
    try:
        for chunk in chunks_of(scorer.layout, files):
            for table in scorer.score_chunk(chunk, summary):
                writer.write_table(table)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    _close(writer, summary)
    tmp.replace(output)
    log(f"scored {summary.scored:,} of {summary.read:,} rows (skipped {summary.skipped:,}) → {output.resolve()}")
    for line in summary.lines():
        log(line)
    return summary


_SCORERS: dict = {}


def _score_chunks(batch: pa.Table, model: str, input_path: str, batch_size: int, output: str) -> pa.Table:
    """Ray Data ``map_batches`` body: chunk descriptors in, one Parquet part per chunk written, counts out."""

    key = (model, input_path, batch_size)
    if key not in _SCORERS:  # one model per worker process, not one per chunk
        _SCORERS.clear()
        _SCORERS[key] = load_scorer(model, input_path, batch_size)[0]
    scorer = _SCORERS[key]
    out = []
    for item in batch.to_pylist():
        chunk = Chunk.from_item(item)
        summary = scorer.summary()
        fs, path = storage.resolve(storage.join(output, f"part-{chunk.index:06d}.parquet"))
        writer = pq.ParquetWriter(path, scorer.schema, filesystem=fs)
        try:
            for table in scorer.score_chunk(chunk, summary):
                writer.write_table(table)
        except BaseException:
            writer.close()
            raise
        _close(writer, summary)
        out.append({"summary": json.dumps(summary.to_dict())})
    return pa.Table.from_pylist(out, schema=pa.schema([("summary", pa.string())]))


def predict_on_ray(model: str | Path, input_path: str, output: str, batch_size: int = 8192,
                   address: str = "local", log: Log = print) -> PredictSummary:
    """Score big inputs on Ray Data: one task per input chunk (64 MiB of text, a Parquet row group), each writing
    ``output/part-<chunk>.parquet`` (a local directory or a URI); ``position`` keeps every row's place."""

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
    summary = scorer.summary()
    for row in ds.iter_rows():
        summary.merge(PredictSummary.from_dict(json.loads(row["summary"])))
    log(f"scored {summary.scored:,} of {summary.read:,} rows (skipped {summary.skipped:,}) in {len(chunks)} "
        f"parts → {output}")
    for line in summary.lines():
        log(line)
    return summary


def prepared_directory(run: Path) -> str:
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
