"""Encoding pass on Ray Data: parse each chunk again, encode with the feature space, stream Parquet shards.

Each read task writes its chunk's rows to ``<split>/part-<chunk>.parquet`` (one file per split and chunk, rows
in input order, written piece by piece), so shard names and contents depend only on the input and the config,
and nothing is collected in the driver but one summary row per shard.
"""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..engine.feature_encoder import FeatureEncoder
from ..engine.features import FeatureSpace
from .chunk_dataset import chunk_dataset
from .inputs import Chunk
from .prepared import encoded_table
from .readers import Layout, parse_chunk
from .split import SPLIT_NAMES, split_of
from .vocabulary import encode_fields

_ENCODERS: dict = {}


def _encoder(ref) -> FeatureEncoder:
    """The feature encoder behind an object ref, fetched once per worker process (its value lookups stay built)."""
    import ray

    key = ref.hex() if hasattr(ref, "hex") else id(ref)
    if key not in _ENCODERS:
        _ENCODERS.clear()
        _ENCODERS[key] = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
    return _ENCODERS[key]


def shard_name(split: str, chunk_index: int) -> str:
    return f"{split}/part-{chunk_index:06d}.parquet"


def encode_chunk(chunk: Chunk, layout: Layout, encoder: FeatureEncoder, numeric_mode: str, seed: int,
                 fractions: Sequence[float], output: str, synthetic_cfg=None) -> list[dict]:
    """Encode one chunk's good rows and write them per split; returns one summary dict per written shard."""
    writers: dict[str, pq.ParquetWriter] = {}
    rows = {name: 0 for name in SPLIT_NAMES}
    try:
        for parsed in parse_chunk(layout, chunk, synthetic_cfg):
            if parsed.num_rows == 0:
                continue
            split = split_of(parsed.positions, seed, fractions)
            _, columns = encode_fields(parsed, layout, numeric_mode)
            ids, values = encoder.encode(columns)
            for code, name in enumerate(SPLIT_NAMES):
                idx = np.flatnonzero(split == code)
                if not len(idx):
                    continue
                table = encoded_table(ids[idx], values[idx], parsed.labels[idx])
                if name not in writers:
                    fs, path = storage.resolve(storage.join(output, shard_name(name, chunk.index)))
                    fs.create_dir(posixpath.dirname(path), recursive=True)
                    writers[name] = pq.ParquetWriter(path, table.schema, filesystem=fs)
                writers[name].write_table(table)
                rows[name] += len(idx)
    finally:
        for w in writers.values():
            w.close()
    return [{"chunk": chunk.index, "split": name, "path": shard_name(name, chunk.index), "rows": rows[name]}
            for name in SPLIT_NAMES if name in writers]


def encode_batches(batch: pa.Table, layout: Layout, encoder_ref, numeric_mode: str, seed: int,
                   fractions: list[float], output: str, synthetic_cfg=None) -> pa.Table:
    """Ray Data ``map_batches`` body: chunk descriptors in, shard summaries out."""
    encoder = _encoder(encoder_ref)
    out: list[dict] = []
    for item in batch.to_pylist():
        out += encode_chunk(Chunk.from_item(item), layout, encoder, numeric_mode, seed, fractions, output,
                            synthetic_cfg)
    pa.default_memory_pool().release_unused()
    schema = pa.schema([("chunk", pa.int64()), ("split", pa.string()), ("path", pa.string()), ("rows", pa.int64())])
    return pa.Table.from_pylist(out, schema=schema)


def encode_and_write(chunks: Sequence[Chunk], layout: Layout, space: FeatureSpace, numeric_mode: str, seed: int,
                     fractions: Sequence[float], output: str | Path, synthetic_cfg=None,
                     progress: Optional[Callable[[int], None]] = None) -> dict[str, list[tuple[str, int]]]:
    """Run the encoding pass on Ray Data; returns {split: [(shard path, rows)]} in input order; ``progress`` gets
    the rows written so far."""
    import ray


    encoder_ref = ray.put(space.encoder())  # not the space: its Python strings cost every worker memory
    ds = chunk_dataset(chunks)
    ds = ds.map_batches(encode_batches, batch_size=1, batch_format="pyarrow", fn_kwargs=dict(
        layout=layout, encoder_ref=encoder_ref, numeric_mode=numeric_mode, seed=seed, fractions=list(fractions),
        output=str(output), synthetic_cfg=synthetic_cfg))
    summary, written = [], 0
    for row in ds.iter_rows():  # streamed as chunks finish
        summary.append(row)
        written += int(row["rows"])
        if progress is not None:
            progress(written)
    summary.sort(key=lambda r: r["chunk"])
    shards: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLIT_NAMES}
    for row in summary:
        shards[row["split"]].append((row["path"], int(row["rows"])))
    return shards
