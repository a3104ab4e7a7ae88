"""Criteo at scale, end to end: generated rows with Criteo Kaggle's per-field cardinality profile
(``autosrh-ray generate criteo``), prepared on Ray Data, then UE, the AutoSrh search, pruning to CR 10 and 20,
the retrains and the test evaluation on Ray Train — the paper's Criteo setting (FM, K 64, L 6, ``min_count`` 10),
the train split streamed every pass and the validation split kept in the workers' memory after its first pass
(``ray.worker_cache_mb`` sized for it, :func:`validation_cache_mb`), four evaluations per pass.

Reports per stage: seconds, rows/s (and per core), evaluations and stop reason; the peak RSS of the driver, of
each kind of Ray process and of all of them together (this process and its descendants — Ray's GCS, raylet and
workers — sampled from /proc every 2 s, PSS every 10 s: summed RSS, where shared memory counts once per process, and summed PSS,
where it counts once; per kind of process its largest PSS, and the tree's PSS by kind at its peak); the statistics pass's
distinct and kept values and the most rows/bytes one merging process held; the shards' bytes on disk; test AUC
and log loss of UE and of AutoSrh at each CR; and whether the vocabulary equals a single-process count of the
same rows (an independent pyarrow pass, :func:`single_process_ids`).

    python benchmarks/scale.py --quick --json scale-2m.json          # 2M rows
    python benchmarks/scale.py --rows 10000000 --json scale-10m.json  # end to end, no cap
    python benchmarks/scale.py --rows 45000000 --max-passes 1         # every stage capped at one pass
    python benchmarks/scale.py --quick --bytes-cr 40,100              # byte budgets: every precision's test AUC
    python benchmarks/scale.py --quick --set model.name=dcnv2 --set search.K=16   # another backbone, its K

Generated data is cached by its arguments under ``--cache`` (default ``~/.cache/autosrh_ray/scale``); each run
writes its output under ``--output`` (default: a temporary directory, removed at the end).
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
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUICK_ROWS = 2_000_000
SAMPLE_SECONDS = 2.0
PSS_EVERY = 5  # rounds


# ------------------------------------------------------------------------------------------------ memory


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children[int(stat[stat.rindex(")") + 2:].split()[1])].append(int(entry))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _pss_mib(pid: int) -> dict[str, float]:
    """Proportional set size: each shared page (the object store's, a library's) split among the processes mapping
    it, so a sum over processes counts it once — in all (``Pss``) and its anonymous (a process's own heap) and
    shared-memory (the object store's) parts."""
    out = {"Pss": 0.0, "Pss_Anon": 0.0, "Pss_Shmem": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(":")[0]
            if key in out:
                out[key] = int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return out


def _rss_mib_and_name(pid: int) -> tuple[float, str]:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (OSError, IndexError, ValueError):
        return 0.0, ""
    name = name.split("/")[-1] if not name.startswith("ray::") else name.split(" ")[0]
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20, name


class TreeMemory:
    """Peak RSS of this process and of each process name below it; peak of the whole tree's summed RSS (shared
    pages once per process: an upper bound) and summed PSS (shared pages once: the tree's memory) — a daemon
    sampler."""

    def __init__(self) -> None:
        self.total = 0.0
        self.total_pss = 0.0
        self.by_name: dict[str, float] = defaultdict(float)
        self.pss_by_name: dict[str, float] = defaultdict(float)  # the largest PSS one process of that kind had
        self.at_peak_pss: dict[str, float] = {}  # PSS summed per kind in the sample of the tree's peak PSS
        self.at_peak_parts: dict[str, float] = {}  # the tree's anonymous and shared-memory PSS in that sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        rounds = 0
        while not self._stop.wait(SAMPLE_SECONDS):
            # PSS walks every process's page tables: sampled every PSS_EVERY-th round (each round, it cost the
            # 2M-row run ~10% of its wall time on 2 cores)
            pss, rounds = rounds % PSS_EVERY == 0, rounds + 1
            total = total_pss = 0.0
            kinds: dict[str, float] = defaultdict(float)
            parts: dict[str, float] = defaultdict(float)
            for pid in _descendants(os.getpid()):
                mib, name = _rss_mib_and_name(pid)
                own = _pss_mib(pid) if pss else {}
                own_pss = own.get("Pss", 0.0)
                for part in ("Pss_Anon", "Pss_Shmem"):
                    parts[part] += own.get(part, 0.0)
                total += mib
                total_pss += own_pss
                key = "driver" if pid == os.getpid() else name
                self.by_name[key] = max(self.by_name[key], mib)
                self.pss_by_name[key] = max(self.pss_by_name[key], own_pss)
                kinds[key.split(".")[0]] += own_pss
            self.total = max(self.total, total)
            if total_pss > self.total_pss:
                self.total_pss, self.at_peak_pss, self.at_peak_parts = total_pss, dict(kinds), dict(parts)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------ data


def generated(rows: int, shards: int, cache: Path) -> Path:
    """Criteo-profile rows as ``shards`` dac text files, generated once per (rows, shards)."""
    directory = cache / f"criteo-{rows}-s{shards}"
    done = cache / f"criteo-{rows}-s{shards}.done"  # beside, not inside: every file inside is input
    if done.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "autosrh_ray", "generate", "criteo", "--rows", str(rows), "--output",
                    str(directory), "--shards", str(shards), "--processes", str(os.cpu_count() or 1)],
                   check=True, cwd=REPO)
    done.write_text(f"{time.perf_counter() - start:.1f} s\n")
    return directory


def single_process_ids(input_path: Path, fields: list, seed: int, fractions: list[float],
                       min_count: int) -> list[tuple]:
    """The id table (field, value, kind, frequency) counted again in this process by the project's reader and
    per-piece counting, merged with one pyarrow ``group_by`` and folded by ``min_count`` by hand — no Ray, no
    shards — to compare with what the distributed pass wrote (``frequencies.parquet``)."""
    import numpy as np
    import pyarrow as pa

    from autosrh_ray.config import load_config
    from autosrh_ray.data.inputs import list_files, plan_text_chunks
    from autosrh_ray.data.readers import layout_for, parse_chunk
    from autosrh_ray.data.statistics_table import StatisticsMerger
    from autosrh_ray.data.vocabulary import merge_statistics, piece_statistics
    from autosrh_ray.engine.features import FeatureSpace

    config = load_config(REPO / "workflows" / "criteo.yaml", [f"dataset.path={input_path}"])
    files = list_files(str(input_path))
    layout = layout_for(config, files)
    merger = StatisticsMerger()
    chunks = plan_text_chunks(files, layout.header, chunk_bytes=1 << 62)  # one chunk per file
    for chunk in chunks:
        for parsed in parse_chunk(layout, chunk, None):
            merger.add(piece_statistics(parsed, layout, config.numeric_mode, seed, fractions))
    stats = merge_statistics(merger.result(), fields)
    count = stats.value_counts.column("count").to_numpy()
    keep = count >= min_count
    folded = np.bincount(stats.value_counts.column("field").to_numpy()[~keep], weights=count[~keep],
                         minlength=len(fields)).astype(np.int64)
    space = FeatureSpace.from_count_table(fields, stats.value_counts.filter(pa.array(keep)), stats.numeric_stats,
                                          min_count, folded)
    return [(int(f), v, int(n)) for f, v, n in zip(space.field_of, space.feature_values, space.frequencies)]


# ------------------------------------------------------------------------------------------------ run


def stage_rows(entry: dict, batch: int, cores: int) -> dict:
    """Per stage of one model: seconds, evaluations, stop reason, rows/s and rows/s per core."""
    out = {}
    for name, s in entry["stages"].items():
        rate = s["steps"] * batch / max(s["loop_seconds"] or s["seconds"], 1e-9)
        out[name] = {"seconds": round(s["seconds"], 1), "evaluations": s["epochs"], "stop": s["stop_reason"],
                     "rows_per_s": round(rate), "rows_per_s_per_core": round(rate / cores)}
    return out


def byte_budget_figures(tag: str, entry: dict) -> dict:
    """A byte budget's own candidates side by side: each one's test AUC, bytes and kept entries, the chosen one
    (a tighter budget's when it validated best: ``..._chosen_from``), and its AUC against fp32 at the same bytes."""
    chosen = next(c for c in entry["candidates"] if c["chosen"])
    out = {f"autosrh_{tag}_chosen": entry["precision"] if isinstance(entry["precision"], str)
           else "/".join(entry["precision"]), f"autosrh_{tag}_chosen_from": chosen["budget"]}
    fp32 = None
    for c in entry["candidates"]:
        if c["budget"] != tag:
            continue
        name = c["name"].split("-", 1)[1]
        out[f"autosrh_{tag}_{name}_test_auc"] = c["test"]["auc"]
        out[f"autosrh_{tag}_{name}_embedding_kib"] = round(c["bytes"] / 1024, 1)
        out[f"autosrh_{tag}_{name}_kept"] = c["kept"]
        if name == "fp32":
            fp32 = c["test"]["auc"]
    if fp32 is not None:
        out[f"autosrh_{tag}_chosen_minus_fp32_auc"] = round(entry["test"]["auc"] - fp32, 5)
    return out


def validation_cache_mb(rows: int, config) -> int:
    """``ray.worker_cache_mb`` that keeps a worker's share of the validation split in memory — once: α's stream
    keeps it and evaluation replays that copy (the search), or evaluation keeps it (UE, retrains) — but not its
    train share (a train share is 8× larger and is taken whole or not at all,
    first): train streams every pass, validation is read once."""
    from autosrh_ray.distributed.cache import KeptBatches, RowCache

    fields = 13 + 26  # Criteo's numeric and categorical fields
    share = -(-int(rows * config.dataset.split[1]) // max(1, config.ray.num_workers))
    train_share = int(rows * config.dataset.split[0]) // max(1, config.ray.num_workers)
    cache = KeptBatches.nbytes(share, fields) * 11 // 10
    if cache >= RowCache.nbytes(train_share, fields):
        raise ValueError("the validation cache would hold the train split: check dataset.split")
    return -(-cache // 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows")
    ap.add_argument("--max-passes", type=int, default=0, help="cap every stage at this many passes (0: no cap)")
    ap.add_argument("--shards", type=int, default=0, help="input files (default: one per 2M rows, at least 2)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "autosrh_ray" / "scale")
    ap.add_argument("--output", type=Path, help="the run's output directory (default: temporary, removed)")
    ap.add_argument("--object-store-mb", type=int, default=2048,
                    help="the local Ray's object store (ray.object_store_mb; 0: Ray's default, 30%% of the memory)")
    ap.add_argument("--bytes-cr", default="",
                    help="byte budgets instead of CR 10 and 20 (e.g. 40,100; prune.bytes_cr, precision chosen by "
                         "validation among the candidates: each candidate's test metrics are reported)")
    ap.add_argument("--skip-vocab-check", action="store_true", help="no single-process count (saves its time)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a workflow override, as autosrh-ray run --set (repeatable): e.g. model.name=dcnv2")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = QUICK_ROWS if args.quick else args.rows
    shards = args.shards or max(2, rows // 2_000_000)
    cores = os.cpu_count() or 1

    from autosrh_ray import workflow
    from autosrh_ray.config import EVALS_PER_LONG_PASS, load_config

    t_gen = time.perf_counter()
    data = generated(rows, shards, args.cache)
    generate_s = time.perf_counter() - t_gen
    output = args.output or Path(tempfile.mkdtemp(prefix="autosrh-scale-"))
    budgets = (["prune.cr=[]", f"prune.bytes_cr=[{args.bytes_cr}]"] if args.bytes_cr else ["prune.cr=[10, 20]"])
    overrides = [f"dataset.path={data}", *budgets, "report.plots=false", f"ray.object_store_mb={args.object_store_mb}",
                 *args.sets]
    base = load_config(REPO / "workflows" / "criteo.yaml", overrides)
    overrides.append(f"ray.worker_cache_mb={validation_cache_mb(rows, base)}")
    steps_per_pass = -(-int(rows * base.dataset.split[0]) // base.train.batch_size)
    # as the workflow evaluates a long pass, also for a pass under its 2,000-step threshold
    every = base.train.eval_every_steps or max(1, steps_per_pass // EVALS_PER_LONG_PASS)
    overrides.append(f"train.eval_every_steps={every}")
    if args.max_passes:
        cap = args.max_passes * max(1, steps_per_pass // every)
        overrides += [f"search.max_epochs={cap}", f"train.max_epochs={cap}"]
    config = load_config(REPO / "workflows" / "criteo.yaml", overrides)
    print(f"scale: {rows:,} rows in {shards} files ({data}); {steps_per_pass:,} steps per pass, evaluating every "
          f"{every:,}; output {output}", flush=True)
    start = time.perf_counter()
    with TreeMemory() as memory:
        report = workflow.run(config, output, log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - start
    prepared_dir = output / report["artifacts"]["prepared"]
    meta = json.loads((prepared_dir / "meta.json").read_text())
    shard_bytes = sum(p.stat().st_size for p in prepared_dir.rglob("*.parquet"))

    figures = {"rows": rows, "shards": shards, "model": config.model.name, "K": config.search.K, "wall_s": round(wall, 1), "generate_s": round(generate_s, 1),
               "prepare_s": round(report["timings_s"]["prepare"], 1), "cores": cores,
               "object_store_mb": args.object_store_mb,
               "peak_rss_total_mib": round(memory.total), "peak_pss_total_mib": round(memory.total_pss),
               "driver_peak_rss_mib": round(memory.by_name["driver"]),
               "num_features": report["num_features"], "distinct_values": meta["statistics"].get("distinct_values"),
               "kept_values": meta["statistics"].get("kept_values"),
               "statistics_peak_rows": meta["statistics"].get("peak_rows"),
               "statistics_peak_mib": round(meta["statistics"].get("peak_bytes", 0) / 2**20, 1),
               "shard_mib": round(shard_bytes / 2**20, 1), "eval_every_steps": every,
               "ue_test_auc": report["reference"]["test"]["auc"],
               "ue_test_logloss": report["reference"]["test"]["logloss"]}
    for entry in report["models"]:
        tag = entry["budget"]
        figures[f"autosrh_{tag}_test_auc"] = entry["test"]["auc"]
        figures[f"autosrh_{tag}_test_logloss"] = entry["test"]["logloss"]
        figures[f"autosrh_{tag}_delta_auc_vs_ue"] = round(entry["test"]["auc"] - figures["ue_test_auc"], 5)
        if "candidates" in entry:  # a byte budget: every precision at the same bytes, and which validation chose
            figures.update(byte_budget_figures(tag, entry))
    stages = {"ue": stage_rows(report["reference"], config.train.batch_size, cores)}
    for entry in report["models"]:
        stages[f"autosrh_{entry['budget']}"] = stage_rows(entry, config.train.batch_size, cores)
    for model, per_stage in stages.items():
        for stage, values in per_stage.items():
            for key, value in values.items():
                figures[f"{model}_{stage}_{key}"] = value
    for name, mib in sorted(memory.by_name.items()):
        if name != "driver":
            figures[f"peak_rss_mib[{name}]"] = round(mib)
            figures[f"peak_pss_mib[{name}]"] = round(memory.pss_by_name[name])
    figures["at_peak_pss_anon_mib"] = round(memory.at_peak_parts.get("Pss_Anon", 0))
    figures["at_peak_pss_shmem_mib"] = round(memory.at_peak_parts.get("Pss_Shmem", 0))
    for name, mib in sorted(memory.at_peak_pss.items()):
        if mib >= 1:
            figures[f"at_peak_pss_mib[{name}]"] = round(mib)
    figures["stopped_at_cap"] = " ".join(sorted(f"{m}.{s}" for m, per in stages.items() for s, v in per.items()
                                                if v["stop"] == "max_epochs"))
    if not args.skip_vocab_check:
        from autosrh_ray.data.prepared import PreparedData

        prepared = PreparedData.load(prepared_dir)
        t = time.perf_counter()
        single = single_process_ids(data, prepared.features.fields, config.dataset.seed,
                                    list(config.dataset.split), config.dataset.min_count)
        ours = [(int(f), v, int(n)) for f, v, n in zip(prepared.features.field_of, prepared.features.feature_values,
                                                       prepared.features.frequencies)]
        figures["vocab_equal_single_process"] = single == ours
        figures["vocab_check_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures))
    if args.output is None:
        shutil.rmtree(output, ignore_errors=True)


if __name__ == "__main__":
    main()
