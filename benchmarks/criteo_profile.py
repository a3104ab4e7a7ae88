"""Criteo-profile generator: write speed and distinct counts against the calibration.

1. Writes ``--rows`` rows (default 2M) as plain dac text with one process (``write_criteo_profile_shards``),
   timed (wall and this process's CPU seconds), then the same rows as gzip shards; and the same plain text with
   ``--processes`` processes (default 2, two shards).
2. Reads the plain text back with pyarrow (categorical columns as strings) and counts distinct tokens per field,
   against :func:`autosrh_ray.data.criteo_profile.expected_distinct` at that row count (the Poisson-scale
   tolerance: the distinct count's variance is below its mean, so ``(measured - expected) / sqrt(expected)`` is
   a z-score bounded like a standard normal's), and prints the 45.84M-row table (target vs expected).
   The writer's peak RSS (this process, before anything is read back) shows memory does not grow with the rows
   or the vocabulary: one block of rows at a time.

    python benchmarks/criteo_profile.py --json out.json        # 2M rows; --quick: 200k
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from autosrh_ray.data.criteo_profile import (CATEGORICAL, COLUMNS, KAGGLE_ROWS, TARGET_DISTINCT,  # noqa: E402
                                             expected_distinct, expected_kept)
from autosrh_ray.data.generate import write_criteo_profile_shards  # noqa: E402


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _distinct(paths) -> np.ndarray:
    """Distinct tokens per categorical field over the files (read as strings, counted by pyarrow)."""
    types = {c: pa.string() for c in CATEGORICAL}
    uniques = [[] for _ in CATEGORICAL]
    for path in paths:
        table = pacsv.read_csv(path, pacsv.ReadOptions(column_names=list(COLUMNS), block_size=64 << 20),
                               pacsv.ParseOptions(delimiter="\t", quote_char=False),
                               pacsv.ConvertOptions(column_types=types))
        for f, name in enumerate(CATEGORICAL):
            uniques[f].append(pc.unique(table.column(name)))
        del table
    return np.array([pc.count_distinct(pa.concat_arrays(u)).as_py() for u in uniques], dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="200k rows")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.rows = 200_000
    tmp = Path(tempfile.mkdtemp(prefix="criteo_profile_"))
    try:
        plain, wall, cpu = _timed(lambda: write_criteo_profile_shards(tmp / "plain", args.rows, 1))
        size = sum(p.stat().st_size for p in plain)
        gz, gz_wall, gz_cpu = _timed(lambda: write_criteo_profile_shards(tmp / "gz", args.rows, 1, gzip=True))
        gz_size = sum(p.stat().st_size for p in gz)
        _, par_wall, _ = _timed(lambda: write_criteo_profile_shards(tmp / "par", args.rows, args.processes,
                                                                    processes=args.processes))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading anything back
        res = {"rows": args.rows, "bytes_per_row": size / args.rows, "gzip_bytes_per_row": gz_size / args.rows,
               "writer_peak_rss_mib": peak_mib,
               "plain_rows_per_s_wall": args.rows / wall, "plain_rows_per_s_cpu": args.rows / cpu,
               "gzip_rows_per_s_wall": args.rows / gz_wall, "gzip_rows_per_s_cpu": args.rows / gz_cpu,
               f"plain_{args.processes}_processes_rows_per_s_wall": args.rows / par_wall}
        measured = _distinct(plain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    expected = expected_distinct(args.rows)
    z = (measured - expected) / np.sqrt(np.maximum(expected, 1))
    exp45 = expected_distinct(KAGGLE_ROWS)
    kept = expected_kept(KAGGLE_ROWS, 10)
    res["fields"] = {name: {"target_45m": TARGET_DISTINCT[f], "expected_45m": float(exp45[f]),
                            "expected_kept10_45m": float(kept[f]), "expected": float(expected[f]),
                            "measured": int(measured[f]), "z": float(z[f])} for f, name in enumerate(CATEGORICAL)}
    res["measured_total"], res["expected_total"] = int(measured.sum()), float(expected.sum())
    res["max_abs_z"] = float(np.abs(z).max())
    print(json.dumps({k: v for k, v in res.items() if k != "fields"}, indent=1))
    print(f"{'field':<6}{'target 45.84M':>14}{'E 45.84M':>14}{'E kept>=10':>12}{'E ' + str(args.rows):>12}"
          f"{'measured':>10}{'z':>7}")
    for f, name in enumerate(CATEGORICAL):
        print(f"{name:<6}{TARGET_DISTINCT[f]:>14,}{exp45[f]:>14,.0f}{kept[f]:>12,.0f}{expected[f]:>12,.0f}"
              f"{measured[f]:>10,}{z[f]:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
