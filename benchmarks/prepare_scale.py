"""Scale benchmark of the data stage: prepare generated Criteo-format data at two sizes (2M and 10M rows; --quick:
200k and 1M, same 1:5 ratio) on Ray Data, and a single-process pyarrow baseline doing the same counting
(training-split value counts of all 39 fields, numerical fields bucketized) on the same files.

For each run it reports rows/s and the peak memory of the whole process tree (sum of PSS over the process and
all its descendants — Ray's GCS, raylet and workers included — so the object store's shared memory is counted
once), sampled every 0.1 s from /proc (Linux). Each run is a fresh subprocess, so peaks are independent.

    python benchmarks/prepare_scale.py --quick --json out.json

Target: Ray's peak memory at the large size <= 1.2x that at the small size (streaming, not materialising).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB_SIZE = 10_000  # per categorical field (Zipf 1.1); values seen grow with rows but saturate


# ------------------------------------------------------------------------------------------------ memory


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_mb(root: int) -> tuple[float, int]:
    """Sum of PSS (MiB) over ``root`` and all its descendants, and the number of processes."""
    children = _children_map()
    stack, seen = [root], []
    while stack:
        pid = stack.pop()
        seen.append(pid)
        stack.extend(children.get(pid, []))
    return sum(_pss_kb(p) for p in seen) / 1024.0, len(seen)


def run_measured(args: list[str]) -> tuple[dict, float, int]:
    """Run a child command; returns its JSON result (last stdout line), peak tree PSS (MiB), peak process count."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peak, procs = [0.0], [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            mb, n = tree_pss_mb(proc.pid)
            peak[0], procs[0] = max(peak[0], mb), max(procs[0], n)
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(args[-4:])}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0], procs[0]


# ------------------------------------------------------------------------------------------------ children


def child_ray(input_dir: str, output: str, num_cpus: int) -> dict:
    import logging

    import ray

    import autosrh_ray.data.prepare as prep
    from autosrh_ray.config import load_config

    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    timings: dict[str, float] = {}
    for name in ("plan_chunks", "count_statistics", "encode_and_write"):
        fn = getattr(prep, name)

        def timed(*a, _fn=fn, _name=name, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                timings[_name] = time.perf_counter() - t

        setattr(prep, name, timed)
    cfg = load_config(None, ["dataset.name=criteo", f"dataset.path={input_dir}", "model.name=fm"])
    t = time.perf_counter()
    prepared = prep.prepare(cfg, output)
    return {"seconds": time.perf_counter() - t, "rows": prepared.rows.read, "features": prepared.num_features,
            "count_lines_s": timings["plan_chunks"], "stats_s": timings["count_statistics"],
            "encode_s": timings["encode_and_write"]}


def child_baseline(input_dir: str, compare: str) -> dict:
    """Single-process pyarrow: stream the files, split by position, count training values per field."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from autosrh_ray.data.inputs import list_files
    from autosrh_ray.data.readers import CRITEO_COLUMNS
    from autosrh_ray.data.split import split_of
    from autosrh_ray.features import bucketize

    t = time.perf_counter()
    types = {c: (pa.float64() if c.startswith("I") else pa.string()) for c in CRITEO_COLUMNS}
    types["label"] = pa.int64()
    fields = list(CRITEO_COLUMNS[1:])
    partial: dict[str, list[pa.Table]] = {f: [] for f in fields}
    position = 0

    def compact(f: str) -> None:
        merged = pa.concat_tables(partial[f]).group_by("v").aggregate([("c", "sum")])
        partial[f] = [merged.rename_columns(["v", "c"])]

    for path in list_files(input_dir):
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS),
                                                                       block_size=16 << 20),
                                parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                convert_options=pacsv.ConvertOptions(column_types=types))
        for batch in reader:
            n = batch.num_rows
            train = pa.array(split_of(np.arange(position, position + n), 2026, [0.8, 0.1, 0.1]) == 0)
            position += n
            for f in fields:
                col = batch.column(f).filter(train)
                if f.startswith("I"):
                    col = pa.array(bucketize(col.to_numpy(zero_copy_only=False)), pa.string())
                vc = pc.value_counts(pc.fill_null(col, ""))
                partial[f].append(pa.table({"v": vc.field("values"), "c": vc.field("counts").cast(pa.int64())}))
                if len(partial[f]) >= 16:
                    compact(f)
    for f in fields:
        compact(f)
    seconds = time.perf_counter() - t
    freq = pq.read_table(Path(compare) / "frequencies.parquet").to_pydict()
    ray_counts = {(fi, v): c for fi, v, k, c in zip(freq["field"], freq["value"], freq["kind"], freq["frequency"])
                  if k == "value"}
    base_counts = {(f, v): c for f in fields for v, c in zip(partial[f][0].column("v").to_pylist(),
                                                              partial[f][0].column("c").to_pylist())}
    return {"seconds": seconds, "rows": position, "distinct": len(base_counts), "matches": ray_counts == base_counts}


# ------------------------------------------------------------------------------------------------ driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200k and 1M rows instead of 2M and 10M")
    ap.add_argument("--json", help="write one flat JSON object of figures here")
    ap.add_argument("--workdir", help="where generated and prepared data go (default: a temp dir, removed)")
    ap.add_argument("--shard-rows", type=int,
                    help="rows per input shard (default: small size / 4, the same for both sizes, so both read "
                         "same-sized files with the same parallelism)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--child", choices=["ray", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "ray":
        print(json.dumps(child_ray(args.input, args.output, args.num_cpus)))
        return
    if args.child == "baseline":
        print(json.dumps(child_baseline(args.input, args.output)))
        return

    from autosrh_ray.config import SyntheticConfig
    from autosrh_ray.data.generate import criteo_shape, write_criteo_shards

    sizes = {"small": 200_000, "large": 1_000_000} if args.quick else {"small": 2_000_000, "large": 10_000_000}
    args.shard_rows = args.shard_rows or sizes["small"] // 4
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="prepare_scale_"))
    figures: dict = {"quick": args.quick, "num_cpus": args.num_cpus, "shard_rows": args.shard_rows,
                     "vocab_size": VOCAB_SIZE}
    synthetic = criteo_shape(SyntheticConfig(vocab_size=VOCAB_SIZE))
    me = [sys.executable, str(Path(__file__).resolve())]
    try:
        for label, rows in sizes.items():
            raw, out = work / f"raw-{rows}", work / f"prepared-{rows}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            shards = max(1, -(-rows // args.shard_rows))
            if not raw.exists() or len(list(raw.iterdir())) != shards:
                shutil.rmtree(raw, ignore_errors=True)
                write_criteo_shards(synthetic, raw, rows, shards, processes=min(shards, args.num_cpus))
            figures[f"generate_s_{label}"] = round(time.perf_counter() - t, 2)
            figures[f"rows_{label}"] = rows
            figures[f"input_shards_{label}"] = shards
            figures[f"input_mb_{label}"] = round(sum(p.stat().st_size for p in raw.iterdir()) / 2**20, 1)
            ray_res, ray_peak, ray_procs = run_measured(me + ["--child", "ray", "--input", str(raw), "--output", str(out),
                                                              "--num-cpus", str(args.num_cpus)])
            base_res, base_peak, _ = run_measured(me + ["--child", "baseline", "--input", str(raw), "--output", str(out)])
            assert ray_res["rows"] == base_res["rows"] == rows, (ray_res, base_res)
            figures.update({
                f"ray_prepare_s_{label}": round(ray_res["seconds"], 2),
                f"ray_rows_per_s_{label}": round(rows / ray_res["seconds"]),
                f"ray_count_lines_s_{label}": round(ray_res["count_lines_s"], 2),
                f"ray_stats_pass_s_{label}": round(ray_res["stats_s"], 2),
                f"ray_encode_pass_s_{label}": round(ray_res["encode_s"], 2),
                f"ray_peak_pss_mb_{label}": round(ray_peak, 1),
                f"ray_peak_processes_{label}": ray_procs,
                f"num_features_{label}": ray_res["features"],
                f"baseline_s_{label}": round(base_res["seconds"], 2),
                f"baseline_rows_per_s_{label}": round(rows / base_res["seconds"]),
                f"baseline_peak_pss_mb_{label}": round(base_peak, 1),
                f"vocab_matches_baseline_{label}": bool(base_res["matches"]),
                f"ray_speed_ratio_to_baseline_{label}": round(base_res["seconds"] / ray_res["seconds"], 3),
                f"ray_stats_speed_ratio_to_baseline_{label}": round(base_res["seconds"] / ray_res["stats_s"], 3),
                f"ray_mem_ratio_to_baseline_{label}": round(ray_peak / base_peak, 3),
            })
            print(f"{label}: {rows} rows  ray {figures[f'ray_rows_per_s_{label}']} rows/s "
                  f"peak {ray_peak:.0f} MiB | baseline {figures[f'baseline_rows_per_s_{label}']} rows/s "
                  f"peak {base_peak:.0f} MiB", flush=True)
        figures["ray_peak_mem_ratio_large_to_small"] = round(figures["ray_peak_pss_mb_large"] /
                                                             figures["ray_peak_pss_mb_small"], 3)
        figures["baseline_peak_mem_ratio_large_to_small"] = round(figures["baseline_peak_pss_mb_large"] /
                                                                  figures["baseline_peak_pss_mb_small"], 3)
        figures["rows_ratio_large_to_small"] = sizes["large"] / sizes["small"]
        figures["memory_target_met"] = figures["ray_peak_mem_ratio_large_to_small"] <= 1.2
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
