"""Ray Train overhead: the same UE epoch over the same Parquet shards as a plain single-process torch loop vs
Ray Train (Ray Data ingest) with 1 and 2 workers, matched torch thread counts.

    python benchmarks/ray_overhead.py [--quick] [--json PATH]

Start-up (process/worker-group start, first batch) and the wait for the end of the epoch's stream (after the
last batch) are reported separately from steady-state samples/s (samples after the first batch / time from the
first to the last batch). The 1-worker Ray run is repeated 3 times; its figures are the medians of the repeats.
The trainer's wait-for-batch share shows whether Ray Data ingest is the bottleneck.

The Ray runs stream every epoch through Ray Data (``ray.worker_cache_mb=0``); the full run adds one with the
default worker cache (epochs after the first replayed from the worker's memory). The plain loop runs before and
after the Ray runs (an idle Ray instance beside it both times); its reference rate is the median over both
runs' epochs, so drift during the run favours neither side. Prints one flat JSON object (also written to
--json), ratios included.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def _config(rows: int, workers: int, storage: str, name: str, batch_size: int = 4096, cache_mb: int = 0):
    """UE DeepFM; ``cache_mb`` 0 streams every epoch through Ray Data (what the target is about)."""
    from autosrh_ray.config import load_config

    return load_config(None, [f"dataset.synthetic.rows={rows}", "search.method=uniform", "model.name=deepfm",
                              "model.hidden=[64, 64]", "search.K=16", f"train.batch_size={batch_size}",
                              f"ray.num_workers={workers}", f"ray.storage_path={storage}", f"run.name={name}",
                              f"ray.worker_cache_mb={cache_mb}"])


def plain_epochs(config, prepared, threads: int, epochs: int) -> dict:
    """UE epochs in this process: read the train shards with pyarrow, step the engine's Trainer.

    Steady state per epoch: samples after the first batch / time from the first to the last batch; the
    median over epochs is reported."""
    from autosrh_ray.data.prepared import split_from_columns
    from autosrh_ray.engine.batch import Batch
    from autosrh_ray.engine.training import Trainer
    from autosrh_ray.methods.model import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, prepared.features, prepared.label_mean)
    trainer = Trainer(model, config.task, config.train.lr)
    table = pa.concat_tables([pq.read_table(p) for p in prepared.split_paths("train")])
    split = split_from_columns({c: table.column(c).to_numpy() for c in table.column_names},
                               prepared.features.num_fields)
    b = config.train.batch_size
    t_first, rates = 0.0, []
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(split))
        first, samples = None, 0
        for s in range(0, len(split) - len(split) % b, b):
            idx = order[s:s + b]
            trainer.step(Batch.from_numpy(split.ids[idx], split.values[idx], split.labels[idx]))
            if first is None:
                first = time.perf_counter()
                t_first = t_first or first - start
            else:
                samples += len(idx)
        rates.append(samples / (time.perf_counter() - first))
    return {"startup_s": t_first, "steady_samples_per_s": statistics.median(rates),
            "total_s": time.perf_counter() - start, "epoch_rates": rates}


def ray_epochs(config, prepared, epochs: int) -> dict:
    """UE epochs on Ray Train (Ray Data ingest), through the production loop; median steady state over epochs.

    Per epoch the first batch and the wait for the end of the stream are start/stop costs, not steady state."""
    from autosrh_ray.distributed.stages import make_runner
    from autosrh_ray.engine.model_state import cpu_state
    from autosrh_ray.engine.training import StopRule
    from autosrh_ray.methods.model import build_model

    torch.manual_seed(0)
    init = cpu_state(build_model(config, prepared.features, prepared.label_mean))
    runner = make_runner(config, prepared)
    start = time.perf_counter()
    state = runner.run("bench", "fit", init, StopRule(max_epochs=epochs, patience=epochs + 1))
    total = time.perf_counter() - start
    b = config.train.batch_size
    steady = [m["train_seconds"] - m["first_batch_seconds"] - m["end_of_stream_seconds"] for m in state.history]
    rates = [(m["train_samples"] - b) / t for m, t in zip(state.history, steady)]
    waits = [(m["data_wait_seconds"] - m["first_batch_seconds"]) / t for m, t in zip(state.history, steady)]
    first = state.history[0]
    return {"startup_s": total - sum(m["train_seconds"] for m in state.history),
            "first_batch_s": statistics.median(m["first_batch_seconds"] for m in state.history),
            "end_of_stream_s": statistics.median(m["end_of_stream_seconds"] for m in state.history),
            "steady_samples_per_s": statistics.median(rates), "total_s": total,
            "wait_share": first["data_wait_seconds"] / first["train_seconds"],
            "wait_share_steady": statistics.median(waits),
            "torch_threads": runner.plan.torch_threads, "cpus_per_worker": runner.plan.cpus_per_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="240k rows instead of 800k (about 2 minutes on 2 cores)")
    parser.add_argument("--json", help="write the flat JSON object here")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (median steady state)")
    parser.add_argument("--batch-size", type=int, default=4096, help="global batch (default: the paper's n=4096)")
    args = parser.parse_args()
    import ray

    from autosrh_ray.data.local import prepare_synthetic

    rows = 240_000 if args.quick else 800_000
    work = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    from autosrh_ray.runtime import LOCAL_SYSTEM_CONFIG

    # the local Ray as the workflow starts it (runtime.connect), with --num-cpus
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             _system_config=LOCAL_SYSTEM_CONFIG)
    ray.data.DataContext.get_current().enable_progress_bars = False
    b = args.batch_size

    def config(workers: int, name: str, cache_mb: int = 0):
        return _config(rows, workers, str(work / "ray"), name, b, cache_mb)

    prepared = prepare_synthetic(config(1, "x"), work / "data")
    out: dict = {"rows_train": prepared.rows.train, "batch_size": b, "num_cpus": args.num_cpus}
    e = out["epochs"] = args.epochs
    from autosrh_ray.distributed.resources import cluster_cpus, plan_resources

    threads = plan_resources(config(1, "plain").ray, cluster_cpus()).torch_threads
    before = plain_epochs(config(1, "plain"), prepared, threads, e)
    ones = [ray_epochs(config(1, f"w1-{r}"), prepared, e) for r in range(3)]  # 3 repeats: medians
    one = {k: statistics.median(r[k] for r in ones) for k in ones[0]}
    two = ray_epochs(config(2, "w2"), prepared, e)
    # the default worker cache: epoch 1 streams, later epochs replay the worker's rows from memory
    cached = None if args.quick else ray_epochs(config(1, "c1", 1024), prepared, e)
    after = plain_epochs(config(1, "plain"), prepared, threads, e)
    plain = {"startup_s": before["startup_s"], "total_s": before["total_s"],
             "steady_samples_per_s": statistics.median(before.pop("epoch_rates") + after.pop("epoch_rates"))}
    out["plain_before_steady_samples_per_s"] = before["steady_samples_per_s"]
    out["plain_after_steady_samples_per_s"] = after["steady_samples_per_s"]
    for prefix, r in (("plain", plain), ("ray1", one), ("ray2", two), ("ray1_cached", cached)):
        out.update({f"{prefix}_{k}": v for k, v in (r or {}).items()})
    for r, run in enumerate(ones):
        out[f"ray1_repeat{r}_total_s"] = run["total_s"]
        out[f"ray1_repeat{r}_steady_samples_per_s"] = run["steady_samples_per_s"]
    out["ratio_ray1_time_vs_plain_steady"] = plain["steady_samples_per_s"] / one["steady_samples_per_s"]
    out["ratio_ray2_time_vs_plain_steady"] = plain["steady_samples_per_s"] / two["steady_samples_per_s"]
    out["ratio_ray1_total_vs_plain_total"] = one["total_s"] / plain["total_s"]
    if cached:
        out["ratio_ray1_cached_time_vs_plain_steady"] = plain["steady_samples_per_s"] / cached["steady_samples_per_s"]
    out["target_ray1_steady_le_1_15"] = out["ratio_ray1_time_vs_plain_steady"] <= 1.15
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
