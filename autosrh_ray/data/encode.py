"""Encoding pass on Ray Data: parse each chunk again, encode with the feature space, stream Parquet shards.

Each read task writes its chunk's rows to ``<split>/part-<chunk>.parquet`` (one file per split and chunk, rows
in input order, written piece by piece), so shard names and contents depend only on the input and the config,
and nothing is collected in the driver but one summary row per shard.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..features import MISSING_TOKEN, FeatureSpace
from .inputs import Chunk
from .prepared import encoded_table
from .readers import Layout, parse_chunk
from .split import SPLIT_NAMES, split_of
from .vocabulary import encode_fields

_ENCODERS: dict = {}


LARGE_VOCAB = 100_000  # fields with more kept values get a persistent hash index


class Encoder:
    """Encodes field columns exactly like :meth:`FeatureSpace.encode`. ``pc.index_in`` rebuilds a field's value
    hash table on every call, which dominates for large vocabularies (Criteo has fields with millions of
    values), so fields above ``large_vocab`` values get a pandas index built once per worker process; smaller
    fields keep ``FeatureSpace.encode_column`` (faster there: no conversion to Python strings)."""

    def __init__(self, space: FeatureSpace, large_vocab: int = LARGE_VOCAB):
        import pandas as pd

        self.space = space
        self._index = [pd.Index(np.asarray(v.values, dtype=object)) if v is not None and len(v.values) > large_vocab
                       else None for v in space.vocabs]

    def encode(self, columns: dict) -> tuple[np.ndarray, np.ndarray]:
        n = len(next(iter(columns.values())))
        f_count = self.space.num_fields
        ids = np.empty((n, f_count), dtype=np.int64)
        values = np.ones((n, f_count), dtype=np.float32)
        for f, spec in enumerate(self.space.fields):
            col = columns[spec.name]
            vocab = self.space.vocabs[f]
            if self._index[f] is None:
                ids[:, f], values[:, f] = self.space.encode_column(f, col)
                continue
            text = pc.fill_null(pc.cast(col, pa.string()), MISSING_TOKEN).to_numpy(zero_copy_only=False)
            pos = self._index[f].get_indexer(text)
            ids[:, f] = np.where(pos >= 0, vocab.ids[np.maximum(pos, 0)] if len(vocab.ids) else vocab.oov_id,
                                 vocab.oov_id)
        return ids, values


def _encoder(ref) -> Encoder:
    """The encoder for the feature space behind an object ref, built once per worker process."""
    import ray

    key = ref.hex() if hasattr(ref, "hex") else id(ref)
    if key not in _ENCODERS:
        _ENCODERS.clear()
        _ENCODERS[key] = Encoder(ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref)
    return _ENCODERS[key]


def shard_name(split: str, chunk_index: int) -> str:
    return f"{split}/part-{chunk_index:06d}.parquet"


def encode_chunk(chunk: Chunk, layout: Layout, encoder: Encoder, numeric_mode: str, seed: int,
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
                    path = os.path.join(output, shard_name(name, chunk.index))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    writers[name] = pq.ParquetWriter(path, table.schema)
                writers[name].write_table(table)
                rows[name] += len(idx)
    finally:
        for w in writers.values():
            w.close()
    return [{"chunk": chunk.index, "split": name, "path": shard_name(name, chunk.index), "rows": rows[name]}
            for name in SPLIT_NAMES if name in writers]


def encode_batches(batch: pa.Table, layout: Layout, space_ref, numeric_mode: str, seed: int,
                   fractions: list[float], output: str, synthetic_cfg=None) -> pa.Table:
    """Ray Data ``map_batches`` body: chunk descriptors in, shard summaries out."""
    encoder = _encoder(space_ref)
    out: list[dict] = []
    for item in batch.to_pylist():
        out += encode_chunk(Chunk.from_item(item), layout, encoder, numeric_mode, seed, fractions, output,
                            synthetic_cfg)
    schema = pa.schema([("chunk", pa.int64()), ("split", pa.string()), ("path", pa.string()), ("rows", pa.int64())])
    return pa.Table.from_pylist(out, schema=schema)


def encode_and_write(chunks: Sequence[Chunk], layout: Layout, space: FeatureSpace, numeric_mode: str, seed: int,
                     fractions: Sequence[float], output: str | Path, synthetic_cfg=None) -> dict[str, list[tuple[str, int]]]:
    """Run the encoding pass on Ray Data; returns {split: [(shard path, rows)]} in input order."""
    import ray

    space_ref = ray.put(space)
    ds = ray.data.from_items([c.to_item() for c in chunks], override_num_blocks=len(chunks))
    ds = ds.map_batches(encode_batches, batch_size=1, batch_format="pyarrow", fn_kwargs=dict(
        layout=layout, space_ref=space_ref, numeric_mode=numeric_mode, seed=seed, fractions=list(fractions),
        output=str(output), synthetic_cfg=synthetic_cfg))
    summary = sorted(ds.take_all(), key=lambda r: r["chunk"])
    shards: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLIT_NAMES}
    for row in summary:
        shards[row["split"]].append((row["path"], int(row["rows"])))
    return shards
