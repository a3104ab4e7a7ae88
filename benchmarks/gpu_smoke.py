"""GPU smoke figures of the engine: UE, search (first order) and packed-retrain steps on the GPU against the same
steps on the CPU, for the quickstart's model and data and for FM at M = 10M, K = 64; peak GPU memory per phase and
the search-step ratio to UE. Run by ``benchmarks/gpu_smoke.sh`` (which also runs the quickstart workflow on the GPU
through Ray Train); ``--cpu`` measures on the CPU only (no GPU needed), ``--tiny`` shrinks everything to seconds.

    python benchmarks/gpu_smoke.py [--cpu] [--tiny] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.distributed.loops import ModelShape
from autosrh_ray.engine.batch import Batch, iterate_batches
from autosrh_ray.engine.prune import kept_count, pruned_state
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import Trainer
from autosrh_ray.methods.model import build_model, model_from_state

QUICKSTART = Path(__file__).resolve().parent.parent / "workflows" / "quickstart.yaml"


def synthetic_batches(m: int, fields: int, batch: int, count: int, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = np.minimum(rng.zipf(1.1, (batch, fields)) - 1, m - 1).astype(np.int64)
        out.append(Batch.from_numpy(ids, np.ones(ids.shape, np.float32), (rng.random(batch) < 0.25).astype(np.float32)))
    return out


def quickstart_batches(config, rows: int, count: int) -> tuple[ModelShape, float, list[Batch], list[Batch]]:
    """The quickstart's synthetic data, prepared in a temporary folder; train and validation batches."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_synthetic(config, Path(tmp))
        train, valid = prepared.load_split("train"), prepared.load_split("valid")
    b = config.train.batch_size
    return (ModelShape(prepared.num_features, prepared.features.num_fields), prepared.label_mean,
            list(iterate_batches(train, b, shuffle=True, seed=0))[:count],
            list(iterate_batches(valid, b, shuffle=True, seed=1))[:count])


def rates(config, shape: ModelShape, label_mean: float, train: list[Batch], valid: list[Batch], device: str,
          steps: int) -> dict[str, float]:
    """Median samples/s of UE, search and retrain steps on ``device``, and peak GPU memory per phase."""
    dev = torch.device(device)
    train = [b.to(dev, torch.float32) for b in train]
    valid = [b.to(dev, torch.float32) for b in valid]
    out: dict[str, float] = {}

    def timed(name: str, step) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        per_step = []
        for i in range(steps + 2):  # two warm-up steps (allocations, optimiser state)
            start = time.perf_counter()
            step(train[i % len(train)], valid[i % len(valid)])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                per_step.append(time.perf_counter() - start)
        out[f"{name}_samples_per_s"] = len(train[0]) / statistics.median(per_step)
        if dev.type == "cuda":
            out[f"{name}_peak_gpu_bytes"] = torch.cuda.max_memory_allocated()

    def ue_phase() -> None:
        uniform = Loaded(config.path, [*config.overrides, "search.method=uniform"]).config
        trainer = Trainer(build_model(uniform, shape, label_mean).to(dev), uniform.task, 1e-3)
        timed("ue", lambda t, v: trainer.step(t))

    def search_phase() -> dict:
        model = build_model(config.config, shape, label_mean).to(dev)
        searcher = BiLevelSearch(model, config.config.task, lr=1e-3)
        timed("search", searcher.step)
        return pruned_state(model.cpu(), kept_count(shape.num_features, config.config.search.K, 10))

    def retrain_phase(state: dict) -> None:
        model = model_from_state(config.config, shape, label_mean, state).to(dev)
        trainer = Trainer(model, config.config.task, 1e-3)
        timed("retrain_cr10", lambda t, v: trainer.step(t))

    torch.manual_seed(0)
    ue_phase()  # each phase's model and optimiser are freed before the next (peak GPU memory per phase)
    retrain_phase(search_phase())
    out["search_to_ue_step_time"] = out["ue_samples_per_s"] / out["search_samples_per_s"]
    return out


class Loaded:
    """A config with the overrides it was loaded with (to derive the UE variant)."""

    def __init__(self, path, overrides: list[str]):
        self.path, self.overrides = path, overrides
        self.config = load_config(path, overrides)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU only (no GPU needed)")
    parser.add_argument("--tiny", action="store_true", help="tiny data and tables: a correctness run in seconds")
    parser.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --cpu to measure on the CPU")
    devices = ["cpu"] if args.cpu else ["cuda", "cpu"]
    steps = 3 if args.tiny else 10
    figures: dict[str, float] = {"tiny": args.tiny, "device": "cpu" if args.cpu else torch.cuda.get_device_name()}
    rows = 20_000 if args.tiny else 200_000
    quick = Loaded(QUICKSTART, [f"dataset.synthetic.rows={rows}"])
    shape, label_mean, train, valid = quickstart_batches(quick.config, rows, 8)
    cases = {"quickstart": (quick, shape, label_mean, train, valid)}
    m = 20_000 if args.tiny else 10_000_000
    fm = Loaded(None, ["model.name=fm", "search.K=64", "train.batch_size=4096"])
    fm_shape = ModelShape(m, 26)
    cases["fm_10m"] = (fm, fm_shape, 0.25, synthetic_batches(m, 26, 4096, 4, 1), synthetic_batches(m, 26, 4096, 4, 2))
    figures["fm_num_features"] = m
    for case, (loaded, case_shape, mean, tr, va) in cases.items():
        for device in devices:
            for key, value in rates(loaded, case_shape, mean, tr, va, device, steps).items():
                figures[f"{case}_{device}_{key}"] = value
        if "cuda" in devices:
            for phase in ("ue", "search", "retrain_cr10"):
                figures[f"{case}_{phase}_gpu_vs_cpu"] = (figures[f"{case}_cuda_{phase}_samples_per_s"]
                                                         / figures[f"{case}_cpu_{phase}_samples_per_s"])
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:,.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
