"""Input files and chunks: what to read, in which order, and where every row sits in the input.

Paths may be local or URIs (``s3://``, ``gs://``, ``file://``; see :mod:`autosrh_ray.storage`). Files are sorted
by path; a plain text file larger than a chunk is cut into byte ranges aligned to line starts, a gzip file is one
chunk, a Parquet file is one chunk per row group. A row's *position* is its file's index in that order and its
index among the file's data lines (headers excluded, bad lines included): ``file_index · 2^40 + line``
(:func:`position`), so it never depends on chunk, block or worker counts, and a single file's positions are its
line numbers. A chunk that starts its file knows its first position without reading anything; only the later
chunks of a cut text file need their earlier lines counted (:func:`needs_counting`), so inputs of files up to a
chunk each, gzip and Parquet files are read once for the statistics (and once more to encode).
Pure Python (no Ray): the Ray Data stages in :mod:`.vocabulary` and :mod:`.encode` call these per chunk.
"""
from __future__ import annotations

import gzip
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import IO, Iterator, Literal, Optional, Sequence

from .. import storage
from ..config import ConfigError
from .errors import DataError

CHUNK_BYTES = 64 << 20  # byte range per read task (plain text)
LINE_BITS = 40  # a position's line part: up to 2^40 data lines per file
PIECE_BYTES = 8 << 20  # bytes parsed at once inside a task (bounds a task's memory, gzip included)
_GZIP_MAGIC = b"\x1f\x8b"


def list_files(path: str, key: str = "dataset.path") -> list[str]:
    """The input files of ``path`` (a file, a glob or a directory of shards; local or a URI), sorted; hidden
    files skipped."""
    path = storage.local_path(path)
    if storage.is_dir(path):
        found = [storage.join(path, n) for n in storage.list_dir(path) if not n.startswith((".", "_"))]
    elif any(c in path for c in "*?["):
        found = storage.glob_files(path)
    else:
        found = [path]
    files = sorted(f for f in found if storage.is_file(f))
    if not files:
        raise ConfigError(key, f"no input file matches {path}")
    return files


def is_gzip(path: str) -> bool:
    with storage.open_input(path) as fh:
        return fh.read(2) == _GZIP_MAGIC


@contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped if it is gzip (local or remote)."""
    with storage.open_input(path) as raw:
        gz = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not gz:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
            yield fh


def first_line(path: str) -> str:
    """The first line of a (possibly gzip) text file, without its line ending ('' for an empty file)."""
    with open_binary(path) as fh:
        return fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")


@dataclass(frozen=True)
class Chunk:
    """One unit of reading. ``kind`` text: bytes [start, end) of ``path`` (end -1: to EOF, gzip); parquet:
    row group ``start``; synthetic: generated rows [start, end). ``first_line`` is the 1-based line (or row)
    number of the chunk's first data row in its file, ``first_position`` its position (:func:`position`)."""

    index: int
    kind: Literal["text", "parquet", "synthetic"]
    path: str
    start: int
    end: int
    skip_header: bool = False
    first_line: int = 1
    first_position: int = 0
    rows: int = -1  # data lines in the chunk (-1: not counted; the statistics pass counts them)
    file_index: int = 0

    def to_item(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_item(item: dict) -> "Chunk":
        return Chunk(**{k: (v.item() if hasattr(v, "item") else v) for k, v in item.items()})


def position(file_index, line):
    """A row's position: its file's index (sorted order) and its 0-based data line within the file."""
    return (file_index << LINE_BITS) + line


def plan_text_chunks(files: Sequence[str], header: bool, chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """Cut text files into line-aligned byte ranges (gzip files stay whole). A file's first chunk knows its first
    line and position; the others get theirs from :func:`assign_positions` after counting."""
    chunks: list[Chunk] = []
    first_line = 2 if header else 1
    for file_index, path in enumerate(files):
        start_of_file = Chunk(len(chunks), "text", path, 0, -1, skip_header=header, first_line=first_line,
                              first_position=position(file_index, 0), file_index=file_index)
        if is_gzip(path):
            chunks.append(start_of_file)
            continue
        size = storage.size(path)
        with storage.open_input(path) as fh:
            start = len(fh.readline()) if header else 0
            while start < size:
                end = size
                if start + chunk_bytes < size:
                    fh.seek(start + chunk_bytes - 1)
                    fh.readline()  # move the cut to the next line start
                    end = fh.tell()
                first = not chunks or chunks[-1].path != path
                chunks.append(replace(start_of_file, index=len(chunks), start=start, end=end, skip_header=False)
                              if first else Chunk(len(chunks), "text", path, start, end, file_index=file_index))
                start = end
    return chunks


def needs_counting(chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks whose line counts place later chunks: every chunk but the last of a file cut into several."""
    return [c for c, nxt in zip(chunks, chunks[1:]) if nxt.path == c.path]


def iter_pieces(chunk: Chunk, piece_bytes: int = PIECE_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield (line-aligned bytes, index of its first line within the chunk) for a text chunk; a truncated or
    corrupt gzip file raises :class:`DataError` naming it and the lines read before the damage."""
    try:
        yield from _pieces(chunk, piece_bytes)
    except _GZIP_ERRORS as err:
        raise DataError(f"{chunk.path}: truncated or corrupt gzip file after line {whole_gzip_lines(chunk.path):,} "
                        f"({err})") from None


_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def whole_gzip_lines(path: str, read_bytes: int = 1 << 12) -> int:
    """The complete lines a damaged gzip file yields before its damage (its header line included): the line
    after which the error is reported. Decompressed step by step (members in turn), so a truncated file gives
    every byte it holds and a corrupt one loses at most the step that fails."""
    lines = 0
    decompressor = zlib.decompressobj(wbits=31)
    try:
        with storage.open_input(path) as raw:
            while block := raw.read(read_bytes):
                while block:
                    lines += decompressor.decompress(block).count(b"\n")
                    block = decompressor.unused_data if decompressor.eof else b""
                    if decompressor.eof:
                        decompressor = zlib.decompressobj(wbits=31)
    except zlib.error:
        pass
    return lines


def _pieces(chunk: Chunk, piece_bytes: int) -> Iterator[tuple[bytes, int]]:
    with open_binary(chunk.path) as fh:
        if chunk.skip_header:
            fh.readline()
        else:
            fh.seek(chunk.start)
        remaining = None if chunk.end < 0 else chunk.end - chunk.start
        line = 0
        while remaining is None or remaining > 0:
            data = fh.read(piece_bytes if remaining is None else min(piece_bytes, remaining))
            if not data:
                break
            if not data.endswith(b"\n") and (remaining is None or remaining > len(data)):
                data += fh.readline()  # complete the last line (a chunk's end is always a line end)
            if remaining is not None:
                remaining -= len(data)
            yield data, line
            line += count_lines(data)


def count_lines(data: bytes) -> int:
    """Lines in a line-aligned byte string (a last line without newline counts)."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def count_chunk_lines(chunk: Chunk) -> int:
    return sum(count_lines(data) for data, _ in iter_pieces(chunk))


def placed_text_chunks(files: Sequence[str], header: bool, chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """:func:`plan_text_chunks` with the cut files' lines counted in this process (Ray Data counts them in
    ``prepare``)."""
    chunks = plan_text_chunks(files, header, chunk_bytes)
    return assign_positions(chunks, {c.index: count_chunk_lines(c) for c in needs_counting(chunks)}, header)


def assign_positions(chunks: Sequence[Chunk], counted: dict[int, int], header: bool) -> list[Chunk]:
    """Give the later chunks of cut files their first line and position from the line counts of the chunks
    before them in the file (``counted``: chunk index → data lines); other chunks are left as they are."""
    out, lines, path = [], 0, None
    for chunk in chunks:
        if chunk.path != path:
            path, lines = chunk.path, 0
        elif chunk.kind == "text":
            chunk = replace(chunk, first_line=lines + (2 if header else 1), first_position=position(chunk.file_index,
                                                                                                   lines))
        out.append(chunk)
        lines += counted.get(chunk.index, 0)
    return out


def plan_parquet_chunks(files: Sequence[str]) -> list[Chunk]:
    """One chunk per row group; positions from the Parquet footers (no counting pass needed)."""
    import pyarrow.parquet as pq

    chunks: list[Chunk] = []
    for file_index, path in enumerate(files):
        try:
            meta = pq.ParquetFile(storage.parquet_source(path)).metadata
        except Exception as err:  # pyarrow raises several types for a non-Parquet file
            raise DataError(f"{path}: not a readable Parquet file ({err.__class__.__name__}: {err})") from None
        line = 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            chunks.append(Chunk(len(chunks), "parquet", path, rg, rg + 1, first_line=line + 1,
                                first_position=position(file_index, line), rows=n, file_index=file_index))
            line += n
    return chunks


def plan_synthetic_chunks(rows: int, rows_per_chunk: int) -> list[Chunk]:
    """Row ranges of the synthetic generator (generated inside the read tasks, nothing on disk)."""
    return [Chunk(i, "synthetic", "<synthetic>", lo, min(lo + rows_per_chunk, rows), first_line=lo + 1,
                  first_position=lo, rows=min(lo + rows_per_chunk, rows) - lo)
            for i, lo in enumerate(range(0, rows, rows_per_chunk))]


def fingerprint(files: Sequence[str]) -> list[list]:
    """What identifies the input for reuse: path, size and modification time of every file."""
    return [[f if storage.is_uri(f) else storage.resolve(f)[1], storage.size(f), storage.mtime_ns(f)] for f in files]


def describe(chunks: Sequence[Chunk], limit: Optional[int] = None) -> str:
    return ", ".join(sorted({c.path for c in chunks})[:limit])
