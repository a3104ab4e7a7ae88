"""Streaming prepared shards into training: lazy ``ray.data`` datasets per split (batches → arrays with
:func:`~autosrh_ray.data.prepared.split_from_columns`)."""
from __future__ import annotations

import pyarrow as pa

from .prepared import PreparedData, column_names
from .split import SPLIT_NAMES


def shard_schema(num_fields: int) -> pa.Schema:
    ids, values = column_names(num_fields)
    return pa.schema([(c, pa.int64()) for c in ids] + [(c, pa.float32()) for c in values] + [("label", pa.float32())])


def split_datasets(prepared: PreparedData) -> dict:
    """{"train", "valid", "test"} → lazy ``ray.data.Dataset`` reading that split's shards (input order kept
    when ``DataContext.execution_options.preserve_order`` is set). An empty split is an empty dataset with the
    shard schema. Nothing is read in the driver."""
    import ray

    out = {}
    for name in SPLIT_NAMES:
        if prepared.shards[name]:
            # One directory path, not the list of shards: Ray 2.60 resolves a list of paths in threads, and
            # that import-races on fsspec's HTTP filesystem when aiohttp is absent (ImportError). The split's
            # directory holds exactly its shards (prepare clears it first); file names sort in input order.
            out[name] = ray.data.read_parquet(str(prepared.directory / name), file_extensions=["parquet"],
                                              shuffle=None)
        else:
            out[name] = ray.data.from_arrow(shard_schema(prepared.features.num_fields).empty_table())
    return out
