"""Scale benchmark of the data stage: prepare generated Criteo-format data at two sizes (2M and 10M rows; --quick:
200k and 1M, same 1:5 ratio) on Ray Data, and a single-process pyarrow baseline doing the same work on the same
files: read, split by (file, line) position, count training values of all 39 fields (numerical ones bucketized),
order the ids, read again, encode and write Parquet per split.

For each path and size it reports rows/s — the median of ``--repeats`` alternating runs (Ray, baseline, Ray …)
— and, from one more run each, the peak memory of the whole process tree (sum of PSS over the process and all
its descendants — Ray's GCS, raylet and workers included — so the object store's shared memory is counted once),
sampled every 0.1 s from /proc (Linux). Timed runs are not sampled: reading every process's smaps costs CPU in
proportion to the process count, which on 2 cores slowed the Ray path (13 processes) and not the baseline (one).
Each run is a fresh subprocess, so peaks are independent. An idle
Ray instance (``ray.init`` and nothing else) is measured apart; Ray's memory ratio to the baseline is its peak
above that idle instance ÷ the baseline's peak.

    python benchmarks/prepare_scale.py --quick --json out.json

Targets (issue 12, at the large size on 2 CPUs): ``ray_speed_ratio_to_baseline_large`` ≥ 0.8,
``ray_mem_ratio_to_baseline_large`` ≤ 2, the vocabulary equal to the baseline's; and Ray's peak memory at the
large size ≤ 1.2× that at the small size (streaming, not materialising).
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


def run_measured(args: list[str], sample: bool = True) -> tuple[dict, float, int]:
    """Run a child command; returns its JSON result (last stdout line), peak tree PSS (MiB), peak process count
    (0, 0 unless ``sample``: a sample reads every process's smaps, ~30 ms for Ray's 13 processes, which would
    slow a timed run on 2 cores by more the more processes it has — so times come from runs without sampling)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peak, procs = [0.0], [0]
    done = threading.Event()

    def sample_tree():
        while not done.is_set():
            mb, n = tree_pss_mb(proc.pid)
            peak[0], procs[0] = max(peak[0], mb), max(procs[0], n)
            done.wait(0.1)

    thread = threading.Thread(target=sample_tree if sample else done.wait, daemon=True)
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

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR)
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


def child_baseline(input_dir: str, output: str, compare: str) -> dict:
    """The same work as the Ray path in one process with pyarrow: read every file, split each row by its position
    (file index, line in the file), count training values per field (numerical fields bucketized), order the ids
    (descending frequency, field, value, per-field OOV last among equals), then read again, encode and write one
    Parquet file per split and input file. Returns its time, rows, and whether its vocabulary (the id table) and
    split sizes equal the Ray path's (``compare``: Ray's prepared directory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from autosrh_ray.data.inputs import list_files, position
    from autosrh_ray.data.prepared import encoded_table
    from autosrh_ray.data.readers import CRITEO_COLUMNS
    from autosrh_ray.data.split import SPLIT_NAMES, TRAIN, split_of
    from autosrh_ray.engine.features import bucketize

    t = time.perf_counter()
    types = {c: (pa.float64() if c.startswith("I") else pa.string()) for c in CRITEO_COLUMNS}
    types["label"] = pa.int64()
    fields = list(CRITEO_COLUMNS[1:])
    files = list_files(input_dir)

    def batches():
        """(file index, first line in the file, record batch) over all files, streamed."""
        for file_index, path in enumerate(files):
            reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS),
                                                                           block_size=16 << 20),
                                    parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
                                    convert_options=pacsv.ConvertOptions(column_types=types))
            line = 0
            for batch in reader:
                yield file_index, line, batch
                line += batch.num_rows

    def tokens(batch, f: str) -> pa.Array:
        col = batch.column(f)
        if f.startswith("I"):
            col = bucketize(col.to_numpy(zero_copy_only=False))
        return pc.fill_null(col, "")

    partial: dict[str, list[pa.Table]] = {f: [] for f in fields}
    rows = 0
    for file_index, line, batch in batches():  # pass 1: count on train
        train = pa.array(split_of(position(file_index, np.arange(line, line + batch.num_rows)), 2026,
                                  [0.8, 0.1, 0.1]) == TRAIN)
        rows += batch.num_rows
        for f in fields:
            vc = pc.value_counts(tokens(batch, f).filter(train))
            partial[f].append(pa.table({"v": vc.field("values"), "c": vc.field("counts").cast(pa.int64())}))
    keys = []  # the id table: (-count, field, value, kind 0 value / 1 OOV); min_count 1: OOV counts are 0
    for fi, f in enumerate(fields):
        merged = pa.concat_tables(partial[f]).group_by("v").aggregate([("c", "sum")])
        keys.append(pa.table({"neg": pc.negate(merged.column("c_sum")), "field": pa.array([fi] * merged.num_rows,
                                                                                          pa.int32()),
                              "value": merged.column("v"), "kind": pa.array([0] * merged.num_rows, pa.int8())}))
        keys.append(pa.table({"neg": pa.array([0], pa.int64()), "field": pa.array([fi], pa.int32()),
                              "value": pa.array(["<OOV>"]), "kind": pa.array([1], pa.int8())}))
    table = pa.concat_tables(keys).sort_by([("neg", "ascending"), ("field", "ascending"), ("value", "ascending"),
                                            ("kind", "ascending")])
    gid = np.arange(table.num_rows)
    field_col, kind_col = table.column("field").to_numpy(), table.column("kind").to_numpy()
    vocab = {}
    for fi, f in enumerate(fields):  # per field: its values (in id order), their ids, its OOV id
        mine = field_col == fi
        values = table.column("value").filter(pa.array(mine & (kind_col == 0)))
        vocab[f] = (values, gid[mine & (kind_col == 0)], int(gid[mine & (kind_col == 1)][0]))
    out = Path(output)
    written = {name: 0 for name in SPLIT_NAMES}
    for name in SPLIT_NAMES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for file_index, line, batch in batches():  # pass 2: encode and write
        split = split_of(position(file_index, np.arange(line, line + batch.num_rows)), 2026, [0.8, 0.1, 0.1])
        ids = np.empty((batch.num_rows, len(fields)), dtype=np.int64)
        for j, f in enumerate(fields):
            values, value_ids, oov = vocab[f]
            where = pc.index_in(tokens(batch, f), value_set=values).to_numpy(zero_copy_only=False)
            found = ~np.isnan(where)
            ids[:, j] = np.where(found, value_ids[np.where(found, where, 0).astype(np.int64)], oov)
        labels = batch.column("label").to_numpy().astype(np.float32)
        ones = np.ones(ids.shape, dtype=np.float32)
        for code, name in enumerate(SPLIT_NAMES):
            idx = np.flatnonzero(split == code)
            pq.write_table(encoded_table(ids[idx], ones[idx], labels[idx]),
                           out / name / f"part-{file_index:05d}-{line:09d}.parquet")
            written[name] += len(idx)
    seconds = time.perf_counter() - t
    freq = pq.read_table(Path(compare) / "frequencies.parquet").to_pydict()
    ray_table = [(v, c) for v, k, c in zip(freq["value"], freq["kind"], freq["frequency"]) if k == "value"]
    base_table = [(v, -n) for v, n, k in zip(table.column("value").to_pylist(), table.column("neg").to_pylist(),
                                             kind_col) if k == 0]
    meta = json.loads((Path(compare) / "meta.json").read_text())
    return {"seconds": seconds, "rows": rows, "distinct": len(base_table),
            "matches": ray_table == base_table and all(meta["rows"][n] == written[n] for n in SPLIT_NAMES)}


def child_idle_ray(num_cpus: int) -> dict:
    """An idle local Ray instance as the Ray prepare starts it (its memory is measured apart)."""
    import logging

    import ray

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    time.sleep(5)
    return {"seconds": 5.0}


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
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path and size (the median is reported)")
    ap.add_argument("--child", choices=["ray", "baseline", "idle"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--compare", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "ray":
        print(json.dumps(child_ray(args.input, args.output, args.num_cpus)))
        return
    if args.child == "baseline":
        print(json.dumps(child_baseline(args.input, args.output, args.compare)))
        return
    if args.child == "idle":
        print(json.dumps(child_idle_ray(args.num_cpus)))
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
    _, idle_peak, _ = run_measured(me + ["--child", "idle", "--num-cpus", str(args.num_cpus)])
    figures["ray_idle_peak_pss_mb"] = round(idle_peak, 1)
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
            base_out = work / f"baseline-{rows}"
            ray_child = me + ["--child", "ray", "--input", str(raw), "--output", str(out), "--num-cpus",
                              str(args.num_cpus)]
            base_child = me + ["--child", "baseline", "--input", str(raw), "--output", str(base_out), "--compare",
                               str(out)]

            def run(child: list[str], sample: bool) -> tuple[dict, float, int]:
                for d in (out, base_out) if child is ray_child else (base_out,):
                    shutil.rmtree(d, ignore_errors=True)  # a finished prepare would be reused
                return run_measured(child, sample)

            # times: the median of alternating unsampled runs; peaks: one sampled run each
            timed = [(run(ray_child, False)[0], run(base_child, False)[0]) for _ in range(args.repeats)]
            ray_res = sorted((r for r, _ in timed), key=lambda r: r["seconds"])[len(timed) // 2]
            base_res = sorted((b for _, b in timed), key=lambda b: b["seconds"])[len(timed) // 2]
            _, ray_peak, ray_procs = run(ray_child, True)
            base_mem, base_peak, _ = run(base_child, True)
            shutil.rmtree(base_out, ignore_errors=True)
            figures[f"ray_prepare_s_runs_{label}"] = ",".join(f"{r['seconds']:.2f}" for r, _ in timed)
            figures[f"baseline_s_runs_{label}"] = ",".join(f"{b['seconds']:.2f}" for _, b in timed)
            above_idle = ray_peak - idle_peak
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
                f"vocab_matches_baseline_{label}": bool(base_res["matches"] and base_mem["matches"]),
                f"ray_speed_ratio_to_baseline_{label}": round(base_res["seconds"] / ray_res["seconds"], 3),
                f"ray_stats_speed_ratio_to_baseline_{label}": round(base_res["seconds"] / ray_res["stats_s"], 3),
                f"ray_peak_above_idle_mb_{label}": round(above_idle, 1),
                f"ray_mem_ratio_to_baseline_{label}": round(above_idle / base_peak, 3),
                f"ray_total_mem_ratio_to_baseline_{label}": round(ray_peak / base_peak, 3),
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
