"""Ray Train overhead: the same UE epoch over the same Parquet shards as a plain single-process torch loop vs
Ray Train (Ray Data ingest) with 1 and 2 workers, matched torch thread counts.

    python benchmarks/ray_overhead.py [--quick] [--json PATH]

Start-up (process/worker-group start, first batch) is reported separately from steady-state samples/s
(samples after the first batch / time after it). The trainer's wait-for-batch share shows whether Ray Data
ingest is the bottleneck. Prints one flat JSON object (also written to --json), ratios included.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def _config(rows: int, workers: int, storage: str, name: str, batch_size: int = 4096):
    from autosrh_ray.config import load_config

    return load_config(None, [f"dataset.synthetic.rows={rows}", "search.method=uniform", "model.name=deepfm",
                              "model.hidden=[64, 64]", "search.K=16", f"train.batch_size={batch_size}",
                              f"ray.num_workers={workers}", f"ray.storage_path={storage}", f"run.name={name}"])


def plain_epoch(config, prepared, threads: int) -> dict:
    """One UE epoch in this process: read the train shards with pyarrow, step the engine's Trainer."""
    from autosrh_ray.batch import Batch
    from autosrh_ray.data.prepared import split_from_columns
    from autosrh_ray.models import build_model
    from autosrh_ray.training import Trainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, prepared.features, prepared.label_mean)
    trainer = Trainer(model, config.task, config.train.lr)
    table = pa.concat_tables([pq.read_table(p) for p in prepared.split_paths("train")])
    split = split_from_columns({c: table.column(c).to_numpy() for c in table.column_names},
                               prepared.features.num_fields)
    b = config.train.batch_size
    order = np.random.default_rng(0).permutation(len(split))
    first, samples, t_first = None, 0, 0.0
    for s in range(0, len(split) - len(split) % b, b):
        idx = order[s:s + b]
        trainer.step(Batch.from_numpy(split.ids[idx], split.values[idx], split.labels[idx]))
        if first is None:
            first, t_first = time.perf_counter(), time.perf_counter() - start
        else:
            samples += len(idx)
    steady = samples / (time.perf_counter() - first)
    return {"startup_s": t_first, "steady_samples_per_s": steady, "total_s": time.perf_counter() - start}


def ray_epoch(config, prepared) -> dict:
    """One UE epoch on Ray Train (Ray Data ingest), through the production loop."""
    from autosrh_ray.distributed import checkpoint as ckpt
    from autosrh_ray.distributed.stages import make_runner
    from autosrh_ray.models import build_model

    torch.manual_seed(0)
    init = ckpt.cpu_state(build_model(config, prepared.features, prepared.label_mean))
    runner = make_runner(config, prepared)
    start = time.perf_counter()
    state = runner.run("bench", "fit", init, epochs=1, patience=1)
    total = time.perf_counter() - start
    m = state.history[-1]
    first_samples = config.train.batch_size
    steady_time = m["train_seconds"] - m["first_batch_seconds"]
    return {"startup_s": total - m["train_seconds"], "steady_samples_per_s": (m["train_samples"] - first_samples)
            / steady_time, "total_s": total, "wait_share": m["data_wait_seconds"] / m["train_seconds"],
            "wait_share_steady": (m["data_wait_seconds"] - m["first_batch_seconds"]) / steady_time,
            "torch_threads": runner.plan.torch_threads, "cpus_per_worker": runner.plan.cpus_per_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data (fits in 2 minutes on 2 cores)")
    parser.add_argument("--json", help="write the flat JSON object here")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--batch-size", type=int, default=4096, help="global batch (default: the paper's n=4096)")
    args = parser.parse_args()
    import ray

    from autosrh_ray.data.local import prepare_synthetic

    rows = 40_000 if args.quick else 400_000
    work = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    prepared = prepare_synthetic(_config(rows, 1, str(work / "ray"), "x"), work / "data")
    b = args.batch_size
    out: dict = {"rows_train": prepared.rows.train, "batch_size": b, "num_cpus": args.num_cpus}
    one = ray_epoch(_config(rows, 1, str(work / "ray"), "w1", b), prepared)
    threads = one["torch_threads"]
    plain = plain_epoch(_config(rows, 1, str(work / "ray"), "plain", b), prepared, threads)
    two = ray_epoch(_config(rows, 2, str(work / "ray"), "w2", b), prepared)
    for prefix, r in (("plain", plain), ("ray1", one), ("ray2", two)):
        out.update({f"{prefix}_{k}": v for k, v in r.items()})
    out["ratio_ray1_time_vs_plain_steady"] = plain["steady_samples_per_s"] / one["steady_samples_per_s"]
    out["ratio_ray2_time_vs_plain_steady"] = plain["steady_samples_per_s"] / two["steady_samples_per_s"]
    out["ratio_ray1_total_vs_plain_total"] = one["total_s"] / plain["total_s"]
    out["target_ray1_steady_le_1_15"] = out["ratio_ray1_time_vs_plain_steady"] <= 1.15
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
