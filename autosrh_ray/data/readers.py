"""Readers of the raw formats: which columns a dataset has, which fields each dataset uses, and parsing one piece.

Each dataset is a :class:`Layout` (Criteo dac, Avazu, KDD12 track 2, MovieLens, Amazon, ``tabular``, synthetic).
:func:`parse_text` / :func:`parse_parquet` / :func:`parse_synthetic` turn one piece of input into a
:class:`Parsed`: the good rows' label and raw field columns with their positions (file, line), and every bad row's
position, line and reason. Malformed rows are never dropped silently: they come back as bad rows.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .. import storage
from ..config import Config, ConfigError
from .errors import BAD_LABEL, BAD_VALUE, NON_NUMERIC, NOT_UTF8, WRONG_COLUMN_COUNT, DataError
from .inputs import Chunk, count_lines, first_line, iter_pieces, list_files
from .synthetic import SyntheticGenerator

CRITEO_COLUMNS = ("label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)])
KDD12_COLUMNS = ("click", "impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID",
                 "KeywordID", "TitleID", "DescriptionID", "UserID")
MOVIELENS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
AMAZON_COLUMNS = ("user", "item", "rating", "timestamp")
AVAZU_HOUR_FIELDS = ("hour_of_day", "weekday")

LabelKind = Literal["binary", "count", "real"]


@dataclass(frozen=True)
class Layout:
    """How to read one dataset: source format, columns, label, and the fields (the paper's choices per dataset).

    ``categorical`` / ``numerical`` are source columns; ``rename`` maps a source column to its field name;
    ``hour`` names Avazu's YYMMDDHH column, which becomes the fields ``hour_of_day`` and ``weekday``.
    """

    name: str
    kind: Literal["text", "parquet", "synthetic"]
    columns: tuple[str, ...] = ()
    label: str = "label"
    label_kind: LabelKind = "binary"
    categorical: tuple[str, ...] = ()
    numerical: tuple[str, ...] = ()
    delimiter: str = "\t"
    quoted: bool = False
    header: bool = False
    rename: tuple[tuple[str, str], ...] = ()
    hour: Optional[str] = None

    def field_name(self, column: str) -> str:
        return dict(self.rename).get(column, column)

    @property
    def categorical_fields(self) -> list[str]:
        """Categorical field names in field order (Avazu's hour fields first)."""
        hour = list(AVAZU_HOUR_FIELDS) if self.hour else []
        return hour + [self.field_name(c) for c in self.categorical]

    @property
    def numerical_fields(self) -> list[str]:
        return [self.field_name(c) for c in self.numerical]


def _header_columns(files: Sequence[str], delimiter: str) -> tuple[str, ...]:
    """The header of the first file; every other file must have the same header."""
    header = first_line(files[0])
    for path in files[1:]:
        if first_line(path) != header:
            raise DataError(f"{path}:1: header differs from {files[0]}'s")
    if not header:
        raise DataError(f"{files[0]}:1: empty header line")
    return tuple(c.strip().strip('"') for c in header.split(delimiter))


def _require(columns: Sequence[str], wanted: Sequence[str], key: str, where: str) -> None:
    for c in wanted:
        if c not in columns:
            raise ConfigError(key, f"column {c!r} not found in {where} (columns: {', '.join(columns)})")


def layout_for(config: Config, files: Sequence[str]) -> Layout:
    """The layout of ``config.dataset`` (reads headers where the format has one)."""
    ds = config.dataset
    name = ds.name
    if name == "synthetic":
        syn = ds.synthetic
        return Layout("synthetic", "synthetic", label="label",
                      numerical=tuple(f"I{i + 1}" for i in range(syn.numerical_fields)),
                      categorical=tuple(f"C{i + 1}" for i in range(syn.categorical_fields)))
    if name == "criteo":
        return Layout("criteo", "text", CRITEO_COLUMNS, "label", "binary",
                      categorical=CRITEO_COLUMNS[14:], numerical=CRITEO_COLUMNS[1:14])
    if name == "kdd12":
        return Layout("kdd12", "text", KDD12_COLUMNS, "click", "count", categorical=KDD12_COLUMNS[2:])
    if name == "amazon":
        return Layout("amazon", "text", AMAZON_COLUMNS, "rating", "real", categorical=("user", "item"),
                      delimiter=",", quoted=True)
    if name == "movielens":
        cols = _header_columns(files, ",")
        _require(cols, MOVIELENS_COLUMNS[:3], "dataset.path", files[0])
        return Layout("movielens", "text", cols, "rating", "real", categorical=("userId", "movieId"),
                      delimiter=",", quoted=True, header=True, rename=(("userId", "user"), ("movieId", "item")))
    if name == "avazu":
        cols = _header_columns(files, ",")
        _require(cols, ("click", "hour"), "dataset.path", files[0])
        cat = tuple(c for c in cols if c not in ("id", "click", "hour"))
        return Layout("avazu", "text", cols, "click", "binary", categorical=cat, delimiter=",", quoted=True,
                      header=True, hour="hour")
    if name == "tabular":
        fmt = ds.format or _infer_format(files[0])
        label_kind: LabelKind = "real" if config.task == "regression" else "binary"
        if fmt == "parquet":
            import pyarrow.parquet as pq

            cols = tuple(pq.ParquetFile(storage.parquet_source(files[0])).schema_arrow.names)
            delimiter, kind = ",", "parquet"
        else:
            delimiter, kind = ("\t" if fmt == "tsv" else ","), "text"
            cols = _header_columns(files, delimiter)
        _require(cols, [ds.label], "dataset.label", files[0])
        _require(cols, ds.categorical, "dataset.categorical", files[0])
        _require(cols, ds.numerical, "dataset.numerical", files[0])
        return Layout("tabular", kind, cols, ds.label, label_kind, categorical=tuple(ds.categorical),
                      numerical=tuple(ds.numerical), delimiter=delimiter, quoted=True, header=kind == "text")
    raise ConfigError("dataset.name", f"no reader for {name}")


def _infer_format(path: str) -> str:
    lower = path.lower().removesuffix(".gz")
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    return "tsv" if lower.endswith((".tsv", ".txt")) else "csv"


def input_files(config: Config) -> list[str]:
    """The dataset's input files, sorted (empty for synthetic)."""
    return [] if config.dataset.name == "synthetic" else list_files(config.dataset.path or "")


# -------------------------------------------------------------------------------------------------------------
# Parsing one piece.


@dataclass
class Parsed:
    """Good rows of one piece (field columns by field name, labels, positions) and its bad rows."""

    path: str
    columns: dict[str, pa.Array]
    labels: np.ndarray
    positions: np.ndarray
    bad_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bad_reasons: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    first_bad: Optional[tuple[int, str]] = None  # (position, "file:line: reason (detail)")

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])


def parse_numbers(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Strings (or numbers) to float64: ('' / null → NaN = missing, bad mask). Valid = Python ``float()``
    accepts it and it is finite."""
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)  # null → NaN
        return x, ~np.isfinite(x) & ~np.isnan(x)
    col = pc.cast(col, pa.string())
    empty = pc.fill_null(pc.equal(col, ""), True)
    try:
        x = pc.cast(pc.if_else(empty, pa.scalar(None, pa.string()), col), pa.float64())
        x = x.to_numpy(zero_copy_only=False).astype(np.float64)
        missing = empty.to_numpy(zero_copy_only=False)
        return x, ~missing & ~np.isfinite(x)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    texts = col.to_pylist()
    x = np.full(len(texts), np.nan)
    bad = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        if t is None or t == "":
            continue
        try:
            v = float(t)
        except ValueError:
            bad[i] = True
            continue
        if math.isfinite(v):
            x[i] = v
        else:
            bad[i] = True
    return x, bad


def parse_label(col: pa.Array, kind: LabelKind) -> tuple[np.ndarray, np.ndarray]:
    """Label values (float32) and a bad mask: binary needs 0/1, count an integer >= 0 (label = count > 0),
    real any finite number; missing is bad."""
    x, bad = parse_numbers(col)
    bad = bad | np.isnan(x)
    with np.errstate(invalid="ignore"):
        if kind == "binary":
            bad |= ~((x == 0) | (x == 1))
        elif kind == "count":
            bad |= ~((x >= 0) & (np.floor(x) == x))
            x = (x > 0).astype(np.float64)
    return np.where(bad, 0.0, x).astype(np.float32), bad


def _hour_fields(col: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Avazu's YYMMDDHH → (hour_of_day, weekday) as strings, and a bad mask."""
    col = pc.cast(col, pa.string())
    ok = pc.fill_null(pc.match_substring_regex(col, r"^\d{8}$"), False)
    ts = pc.strptime(pc.if_else(ok, col, pa.scalar(None, pa.string())), format="%y%m%d%H", unit="s",
                     error_is_null=True)
    bad = pc.is_null(ts).to_numpy(zero_copy_only=False)
    hour = pc.fill_null(pc.cast(pc.hour(ts), pa.string()), "")
    weekday = pc.fill_null(pc.cast(pc.day_of_week(ts), pa.string()), "")
    return hour, weekday, bad


_EMPTY_LINE = re.compile(rb"(?m)^\r?\n")


def _has_empty_line(data: bytes) -> bool:
    """Whether a piece holds an empty line (a fast substring check before the line-by-line regex)."""
    return data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data


def _read_csv(data: bytes, layout: Layout, path: str) -> tuple[pa.Table, list[tuple[int, int]], np.ndarray, list]:
    """The piece's rows as string columns, the rows the parser rejected ((1-based row number, columns found)),
    and the rows whose bytes are not UTF-8: their table rows and, for each, the first such column's name (those
    rows stay in the table with that value blanked, for the caller to drop)."""
    invalid: list[tuple[int, int]] = []

    def handler(row) -> str:
        invalid.append((row.number, row.actual_columns))
        return "skip"

    def read(value_type: pa.DataType) -> pa.Table:
        invalid.clear()
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 26),
            parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, quote_char='"' if layout.quoted else False,
                                             ignore_empty_lines=False, newlines_in_values=False,
                                             invalid_row_handler=handler),
            convert_options=pacsv.ConvertOptions(column_types={c: value_type for c in names},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False,
                                                 include_columns=names))

    names = list(layout.columns)
    try:
        try:
            return read(pa.string()), invalid, np.zeros(0, dtype=np.int64), []
        except pa.ArrowInvalid as err:
            if "UTF8" not in str(err):
                raise
        table, rows, columns = _utf8_only(read(pa.binary()))
        return table, invalid, rows, columns
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: cannot parse as {layout.name} ({err})") from None


def _utf8_only(table: pa.Table) -> tuple[pa.Table, np.ndarray, list[str]]:
    """A table read as bytes, as strings: values that are not UTF-8 blanked; returns the table, the rows that had
    any (ascending) and each one's first such column (the slow path of a piece that holds such bytes)."""
    first_column: dict[int, str] = {}
    out = {}
    for name in table.column_names:
        values = table.column(name).combine_chunks()
        try:
            out[name] = values.cast(pa.string())
            continue
        except pa.ArrowInvalid:
            pass
        decoded = []
        for i, value in enumerate(values.to_pylist()):
            try:
                decoded.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                first_column.setdefault(i, name)
                decoded.append("")
        out[name] = pa.array(decoded, type=pa.string())
    rows = np.array(sorted(first_column), dtype=np.int64)
    return pa.table(out), rows, [first_column[int(i)] for i in rows]


def _validate(table: pa.Table, layout: Layout) -> tuple[np.ndarray, dict[str, pa.Array], np.ndarray]:
    """Labels, field columns and per-row reason ('' = good) of a table holding the layout's source columns."""
    n = table.num_rows
    reason = np.full(n, "", dtype=object)

    def mark(mask: np.ndarray, why: str) -> None:
        reason[mask & (reason == "")] = why

    labels, bad = parse_label(table.column(layout.label).combine_chunks(), layout.label_kind)
    mark(bad, BAD_LABEL)
    columns: dict[str, pa.Array] = {}
    for c in layout.numerical:
        x, bad = parse_numbers(table.column(c).combine_chunks())
        mark(bad, NON_NUMERIC)
        columns[layout.field_name(c)] = pa.array(x, type=pa.float64())
    if layout.hour:
        hour, weekday, bad = _hour_fields(table.column(layout.hour).combine_chunks())
        mark(bad, BAD_VALUE)
        columns[AVAZU_HOUR_FIELDS[0]], columns[AVAZU_HOUR_FIELDS[1]] = hour, weekday
    for c in layout.categorical:
        columns[layout.field_name(c)] = table.column(c).combine_chunks()
    return labels, columns, reason


def _detail(table: pa.Table, i: int, why: str, layout: Layout) -> str:
    """Human detail of bad row i of a parsed table."""
    if why == BAD_LABEL:
        return f"label {layout.label} = {table.column(layout.label)[i].as_py()!r}"
    if why == NON_NUMERIC:
        for c in layout.numerical:
            v = table.column(c)[i].as_py()
            if parse_numbers(pa.array([v]))[1][0]:
                return f"numerical field {c} = {v!r}"
    if why == BAD_VALUE and layout.hour:
        return f"{layout.hour} = {table.column(layout.hour)[i].as_py()!r} is not YYMMDDHH"
    if why == WRONG_COLUMN_COUNT:
        return f"empty line, expected {len(layout.columns)} columns"
    return why


def assemble_rows(path: str, table: pa.Table, layout: Layout, local: np.ndarray, first_line: int,
              first_position: int, extra_bad: Sequence[tuple[int, str, str]], where: str) -> Parsed:
    """Validate a parsed table whose row i is local line ``local[i]``; ``extra_bad`` = (local line, reason,
    detail) of rows the parser rejected itself."""
    labels, columns, reason = _validate(table, layout)
    good = reason == ""
    bad_local = np.concatenate([local[~good], np.array([b[0] for b in extra_bad], dtype=np.int64)])
    bad_reason = np.concatenate([reason[~good], np.array([b[1] for b in extra_bad], dtype=object)])
    first_bad = None
    if len(bad_local):
        j = int(np.argmin(bad_local))
        if j < int((~good).sum()):
            i = int(np.flatnonzero(~good)[j])
            detail = _detail(table, i, reason[i], layout)
        else:
            detail = extra_bad[j - int((~good).sum())][2]
        first_bad = (first_position + int(bad_local[j]),
                     f"{path}:{where}{first_line + int(bad_local[j])}: {bad_reason[j]} ({detail})")
    if not good.all():
        keep = pa.array(good)
        columns = {k: v.filter(keep) for k, v in columns.items()}
    order = np.argsort(bad_local, kind="stable")
    return Parsed(path, columns, labels[good], first_position + local[good],
                  first_position + bad_local[order], bad_reason[order], first_bad)


def parse_text(data: bytes, layout: Layout, chunk: Chunk, line_offset: int) -> Parsed:
    """Parse a line-aligned piece of a text chunk whose first line is line ``line_offset`` of the chunk."""
    table, invalid, not_utf8, not_utf8_columns = _read_csv(data, layout, chunk.path)
    n_lines = table.num_rows + len(invalid)
    if n_lines != count_lines(data):
        raise DataError(f"{chunk.path}:{chunk.first_line + line_offset}: cannot split lines consistently "
                        f"(quoted newline or bare CR line ending?)")
    invalid_local = np.array([num - 1 for num, _ in invalid], dtype=np.int64)
    local = np.delete(np.arange(n_lines, dtype=np.int64), invalid_local)
    extra = [(int(i), WRONG_COLUMN_COUNT, f"expected {len(layout.columns)} columns, got {actual}")
             for i, (_, actual) in zip(invalid_local, invalid)]
    if len(not_utf8):
        extra += [(int(local[r]), NOT_UTF8, f"column {column} is not UTF-8 text")
                  for r, column in zip(not_utf8, not_utf8_columns)]
        keep = np.ones(table.num_rows, dtype=bool)
        keep[not_utf8] = False
        table, local = table.filter(pa.array(keep)), local[keep]
    if len(layout.columns) > 1 and table.num_rows and _has_empty_line(data):
        empty = np.array([data.count(b"\n", 0, m.start()) for m in _EMPTY_LINE.finditer(data)], dtype=np.int64)
        if len(empty):
            rows = np.flatnonzero(np.isin(local, empty))
            extra += [(int(local[r]), WRONG_COLUMN_COUNT, f"empty line, expected {len(layout.columns)} columns")
                      for r in rows]
            keep = np.ones(table.num_rows, dtype=bool)
            keep[rows] = False
            table, local = table.filter(pa.array(keep)), local[keep]
    return assemble_rows(chunk.path, table, layout, local + line_offset, chunk.first_line,
                     chunk.first_position, [(i + line_offset, r, d) for i, r, d in extra], "")


def parse_parquet(layout: Layout, chunk: Chunk) -> Parsed:
    """Parse one row group of a Parquet file (bad rows are named by their 1-based row in the file)."""
    import pyarrow.parquet as pq

    wanted = list(dict.fromkeys([layout.label, *layout.numerical, *layout.categorical]))
    table = pq.ParquetFile(storage.parquet_source(chunk.path)).read_row_group(chunk.start, columns=wanted)
    local = np.arange(table.num_rows, dtype=np.int64)
    return assemble_rows(chunk.path, table, layout, local, chunk.first_line, chunk.first_position, [], "row ")


_GENERATORS: dict = {}


def parse_synthetic(layout: Layout, chunk: Chunk, synthetic_cfg) -> Parsed:
    """Generate rows [start, end) of the synthetic dataset (deterministic by row range)."""

    key = repr(synthetic_cfg)
    if key not in _GENERATORS:
        _GENERATORS.clear()
        _GENERATORS[key] = SyntheticGenerator(synthetic_cfg)
    table = _GENERATORS[key].table(chunk.start, chunk.end)
    labels = table.column("label").to_numpy().astype(np.float32)
    columns = {c: table.column(c).combine_chunks() for c in (*layout.numerical, *layout.categorical)}
    return Parsed("<synthetic>", columns, labels, np.arange(chunk.start, chunk.end, dtype=np.int64))


def parse_chunk(layout: Layout, chunk: Chunk, synthetic_cfg=None):
    """Yield :class:`Parsed` pieces of one chunk, in input order."""

    if chunk.kind == "synthetic":
        yield parse_synthetic(layout, chunk, synthetic_cfg)
    elif chunk.kind == "parquet":
        yield parse_parquet(layout, chunk)
    else:
        for data, offset in iter_pieces(chunk):
            yield parse_text(data, layout, chunk, offset)
