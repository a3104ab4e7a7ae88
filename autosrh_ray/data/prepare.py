"""``prepare(config, output)``: the data stage on Ray Data, from raw input to encoded Parquet shards.

Passes (all Ray Data over a dataset of chunk descriptors, see :mod:`.inputs`):

1. only for text files cut into several chunks: count the lines of their chunks (but the last), so every chunk
   knows its rows' positions (file index, line in the file); whole files, gzip, Parquet (footers) and synthetic
   rows need nothing;
2. read, parse, split by position, and count training values / numerical sums / rows per split and skip reason
   (:mod:`.vocabulary`), one table per chunk, merged in the driver as they stream in; the driver assigns ids
   (``FeatureSpace.from_count_table``);
3. read and parse again, encode, write ``train/ valid/ test/`` shards (:mod:`.encode`), then ``meta.json``.

A directory whose ``meta.json`` has the same config hash and input fingerprint is reused as is. Ray Data tasks
take one CPU each and no actors are used, so nothing can hold every CPU while a data task waits for one.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Callable

from .. import storage
from ..config import Config
from ..rate_line import Progress
from ..runtime import connect
from ..supervise import doing
from .chunk_dataset import chunk_dataset
from .encode import encode_and_write
from .errors import DataError
from .inputs import (CHUNK_BYTES, Chunk, assign_positions, count_chunk_lines, describe, fingerprint, needs_counting,
                     plan_parquet_chunks, plan_synthetic_chunks, plan_text_chunks)
from .local import config_hash
from .prepared import META_FILE, PreparedData
from .readers import Layout, input_files, layout_for
from .split import SPLIT_NAMES
from .vocabulary import count_statistics, field_specs

SYNTHETIC_CHUNK_ROWS = 262_144  # a multiple of the generator's block size


def input_fingerprint(files: list[str]) -> str:
    return hashlib.sha256(json.dumps(fingerprint(files)).encode()).hexdigest()[:16] if files else ""


def reusable(output: str, chash: str, fp: str) -> bool:
    """Whether ``output`` holds a finished prepare of the same config and input."""
    meta_path = storage.join(output, META_FILE)
    if not storage.is_file(meta_path):
        return False
    try:
        meta = json.loads(storage.read_text(meta_path))
    except json.JSONDecodeError:
        return False
    return meta.get("config_hash") == chash and meta.get("input_fingerprint", "") == fp


def _count_lines_batch(batch):
    import pyarrow as pa

    items = batch.to_pylist()
    return pa.table({"index": [it["index"] for it in items],
                     "rows": [count_chunk_lines(Chunk.from_item(it)) for it in items]})


def plan_chunks(config: Config, layout: Layout, files: list[str], chunk_bytes: int,
                synthetic_rows_per_chunk: int) -> list[Chunk]:
    """All chunks with their first line and position (pass 1: counting only where a file is cut)."""
    if layout.kind == "synthetic":
        return plan_synthetic_chunks(config.dataset.synthetic.rows, synthetic_rows_per_chunk)
    if layout.kind == "parquet":
        return plan_parquet_chunks(files)
    chunks = plan_text_chunks(files, layout.header, chunk_bytes)
    todo = needs_counting(chunks)
    if not todo:
        return chunks
    ds = chunk_dataset(todo)
    counted = {r["index"]: r["rows"] for r in ds.map_batches(_count_lines_batch, batch_size=1,
                                                              batch_format="pyarrow").take_all()}
    return assign_positions(chunks, counted, layout.header)


DATA_MODULES = ("ray.data", "autosrh_ray.data.encode", "autosrh_ray.data.vocabulary")  # what the passes' tasks import


def _import_data_modules() -> None:
    for name in DATA_MODULES:
        importlib.import_module(name)


def warm_data_workers(at_most: int = 16) -> None:
    """Import what the passes' tasks need in one worker per CPU (``at_most``), without waiting: Ray Data starts
    its own actors in the driver meanwhile, so its first tasks find the imports done (~0.3 s of a 1M-row prepare
    on 2 CPUs)."""
    import ray

    task = ray.remote(num_cpus=1)(_import_data_modules)
    for _ in range(max(1, min(at_most, int(ray.available_resources().get("CPU", 1))))):
        task.remote()


def _clear(output: str) -> None:
    """Remove what an earlier prepare wrote (meta first, so a half-written directory is never reused)."""
    for name in (META_FILE, *SPLIT_NAMES, "features.json", "frequencies.parquet"):
        storage.remove(storage.join(output, name))


def prepare(config: Config, output: str | Path, *, chunk_bytes: int = CHUNK_BYTES,
            synthetic_rows_per_chunk: int = SYNTHETIC_CHUNK_ROWS,
            log: Callable[[str], None] = lambda _: None) -> PreparedData:
    """Prepare ``config.dataset`` into ``output`` on Ray Data (or reuse it); see the module docstring. ``log``
    gets a line per pass and, on long passes, progress lines with rows/s and ETA.

    Raises ``ConfigError`` (missing files, unknown columns) or :class:`DataError` (bad rows with
    ``on_bad_rows: error``, empty input), each with a one-line message.
    """
    output = storage.absolute(output)
    ds = config.dataset
    files = input_files(config)
    chash, fp = config_hash(config), input_fingerprint(files)
    if reusable(output, chash, fp):
        log(f"[prepare] reused {output} (same config and input)")
        return PreparedData.load(output)
    layout = layout_for(config, files)
    connect(config.ray)
    mode = config.numeric_mode
    syn = ds.synthetic if layout.kind == "synthetic" else None
    chunks = plan_chunks(config, layout, files, chunk_bytes, synthetic_rows_per_chunk)
    if not chunks:
        raise DataError(f"{describe(chunks) or ds.path}: no data rows")
    # only now: an error above leaves no warm-up task in flight for the driver's exit to cut off ("Failed to
    # push error to driver" on the terminal after the one line)
    warm_data_workers()
    log(f"[prepare] {len(chunks)} chunks of {len(files) or 1} input(s)")
    doing("[prepare] (the statistics pass over the input chunks, Ray Data)")
    fields = field_specs(layout, mode)
    stats = count_statistics(chunks, layout, mode, ds.seed, ds.split, fields, syn,
                             Progress("prepare: statistics", len(chunks), log, unit="chunks",
                                      final_line=len(chunks) > 1).update, ds.min_count)
    rows = stats.rows
    if rows.read == 0:
        raise DataError(f"{describe(chunks) or ds.path}: no data rows")
    if stats.first_bad is not None and ds.on_bad_rows == "error":
        raise DataError(f"{stats.first_bad[1]} (set dataset.on_bad_rows: skip to skip such rows)")
    log(f"[prepare] {rows.read:,} rows read")
    if rows.train == 0:
        raise DataError(f"{describe(chunks, 3)}: no training rows kept ({rows.skipped} of {rows.read} rows skipped)")
    rows.skipped_by_split = stats.skipped_by_split
    rows.check()
    space = stats.feature_space(fields, ds.min_count)
    storage.makedirs(output)
    _clear(output)
    space.save(output)
    doing("[prepare] (encoding and writing the splits, Ray Data)")
    shards = encode_and_write(chunks, layout, space, mode, ds.seed, ds.split, output, syn,
                              Progress("prepare: encode", rows.train + rows.valid + rows.test, log).update)
    for name in SPLIT_NAMES:
        written = sum(n for _, n in shards[name])
        if written != getattr(rows, name):
            raise AssertionError(f"{name}: counted {getattr(rows, name)} rows, wrote {written}")
    prepared = PreparedData(output, space, config.task, stats.label_sum / rows.train, rows, chash,
                            {name: [p for p, _ in shards[name]] for name in SPLIT_NAMES}, fp, stats.summary())
    prepared.write_meta()
    return prepared
