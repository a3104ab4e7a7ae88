"""Scale generator: the synthetic dataset written as raw Criteo dac text (label, I1–I13, C1–C26, tab-separated,
empty = missing) in N shards, so the Criteo reader and the whole prepare path are testable at any size.

The synthetic config's numerical fields fill I1..In and its categorical fields C1..Cc; the remaining Criteo
columns are written empty (missing). Row r is the generator's row r whatever the shard count, so the
concatenated shards are identical for any ``shards``. Ray-free; memory is bounded by one block of rows.

:func:`write_criteo_profile_shards` writes the Criteo-profile data instead (:mod:`.criteo_profile`: Criteo Kaggle's
per-field cardinalities at 45M rows, heavy-tailed, planted signal), with the same shard layout and guarantees.
"""
from __future__ import annotations

import gzip as gzip_module
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..config import ConfigError, SyntheticConfig
from .criteo_profile import CriteoProfile
from .synthetic import BLOCK_ROWS, SyntheticGenerator

CRITEO_NUMERICAL, CRITEO_CATEGORICAL = 13, 26
WRITE_ROWS = 4 * BLOCK_ROWS


def criteo_shape(cfg: SyntheticConfig) -> SyntheticConfig:
    """The synthetic config with Criteo's 13 numerical and 26 categorical fields (other keys kept)."""
    return replace(cfg, numerical_fields=CRITEO_NUMERICAL, categorical_fields=CRITEO_CATEGORICAL,
                   signal_fields=min(cfg.signal_fields, CRITEO_CATEGORICAL))


def _criteo_table(gen: SyntheticGenerator, start: int, stop: int) -> pa.Table:
    table = gen.table(start, stop)
    n = table.num_rows
    cols = {"label": table.column("label")}
    for i in range(1, CRITEO_NUMERICAL + 1):
        name = f"I{i}"
        cols[name] = (pa.compute.cast(table.column(name), pa.int64()) if name in gen.numerical
                      else pa.nulls(n, pa.int64()))
    for i in range(1, CRITEO_CATEGORICAL + 1):
        name = f"C{i}"
        cols[name] = table.column(name) if name in gen.categorical else pa.nulls(n, pa.string())
    return pa.table(cols)


def criteo_text(gen: SyntheticGenerator, start: int, stop: int) -> bytes:
    """Rows [start, stop) as Criteo dac lines."""
    sink = io.BytesIO()
    pacsv.write_csv(_criteo_table(gen, start, stop), sink,
                    pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
    return sink.getvalue()


def _write_shard(synthetic_cfg: SyntheticConfig, path: Path, rows: int, start: int, stop: int, gzip: bool) -> Path:
    gen = SyntheticGenerator(replace(synthetic_cfg, rows=rows))
    opener = gzip_module.open(path, "wb", compresslevel=1) if gzip else open(path, "wb")
    with opener as fh:
        for lo in range(start, stop, WRITE_ROWS):
            fh.write(criteo_text(gen, lo, min(lo + WRITE_ROWS, stop)))
    return path


def write_criteo_shards(synthetic_cfg: SyntheticConfig, out_dir: str | Path, rows: int, shards: int,
                        gzip: bool = False, processes: int = 1, first_row: int = 0) -> list[Path]:
    """Write ``rows`` generated rows (the generator's rows ``first_row`` …) as ``shards`` Criteo-format files
    ``part-00000.txt[.gz]`` in ``out_dir`` (up to ``processes`` shards written at once). Rows from
    ``synthetic_cfg.rows`` on are rows of the same distribution that a run on the dataset never read.

    Raises ``ConfigError`` if the synthetic shape does not fit Criteo's 13 + 26 columns or sizes are < 1.
    """
    if synthetic_cfg.numerical_fields > CRITEO_NUMERICAL:
        raise ConfigError("dataset.synthetic.numerical_fields", f"must be <= {CRITEO_NUMERICAL} for the Criteo format")
    if synthetic_cfg.categorical_fields > CRITEO_CATEGORICAL:
        raise ConfigError("dataset.synthetic.categorical_fields",
                          f"must be <= {CRITEO_CATEGORICAL} for the Criteo format")
    for key, value in (("rows", rows), ("shards", shards), ("processes", processes)):
        if value < 1:
            raise ConfigError(key, f"must be >= 1 (got {value})")
    return _write_shards(_write_shard, synthetic_cfg, out_dir, rows, shards, gzip, processes, first_row)


def _write_shards(write, source, out_dir: str | Path, rows: int, shards: int, gzip: bool,
                  processes: int, first_row: int = 0) -> list[Path]:
    """``write(source, path, rows, start, stop, gzip)`` for each shard's row range (rows ``first_row`` …), up to
    ``processes`` at once."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bounds = first_row + np.linspace(0, rows, shards + 1).astype(np.int64)
    jobs = [(source, out / f"part-{s:05d}.txt{'.gz' if gzip else ''}", rows, int(bounds[s]),
             int(bounds[s + 1]), gzip) for s in range(shards)]
    if processes == 1 or shards == 1:
        return [write(*job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(processes, shards)) as pool:
        return list(pool.map(write, *zip(*jobs)))


def _write_profile_shard(seed: int, path: Path, rows: int, start: int, stop: int, gzip: bool) -> Path:
    gen = CriteoProfile(seed)
    opener = gzip_module.open(path, "wb", compresslevel=1) if gzip else open(path, "wb")
    with opener as fh:
        for _, block in gen.blocks(start, stop):
            fh.write(memoryview(gen.line_bytes(block)))
    return path


def write_criteo_profile_shards(out_dir: str | Path, rows: int, shards: int = 1, gzip: bool = False,
                                processes: int = 1, seed: int = 0) -> list[Path]:
    """Write ``rows`` Criteo-profile rows (:class:`.criteo_profile.CriteoProfile` with ``seed``) as ``shards``
    dac files ``part-00000.txt[.gz]`` in ``out_dir``, up to ``processes`` shards at once; the concatenated
    shards are the same bytes for any ``shards`` and ``processes``. Raises ``ConfigError`` if a size is < 1."""
    for key, value in (("rows", rows), ("shards", shards), ("processes", processes)):
        if value < 1:
            raise ConfigError(key, f"must be >= 1 (got {value})")
    return _write_shards(_write_profile_shard, seed, out_dir, rows, shards, gzip, processes)
