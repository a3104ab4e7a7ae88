"""Engine throughput, side by side in one process: training rows per second of

* a UE (uniform embedding) train step,
* a first-order and a second-order AutoSrh search step (one train + one validation batch each; counted as the
  train batch's rows, since that is what advances an epoch),
* a retrain step (the kept entries in the packed layout, CR = 10) and the same step in the masked dense layout it
  replaced (``retrain_vs_masked``: packed ÷ masked, target ≥ 1),

each with the dense Adam and the sparse Adam embedding optimiser, and the ratios to UE with the same optimiser.
Steps are timed in interleaved rounds (A, B, C, D, A, B, …) and the median round is reported, so machine noise
hits every variant alike. Targets (issue 2): first order ≥ 0.45× UE, second order ≥ 0.22×, retrain ≥ 0.9×.

    python benchmarks/engine_throughput.py --quick --json engine.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

from autosrh_ray.config import load_config
from autosrh_ray.engine.allocator import keep_large_blocks
from autosrh_ray.engine.batch import Batch
from autosrh_ray.engine.features import FeatureSpace, FieldSpec
from autosrh_ray.engine.packed import MaskedEmbedding
from autosrh_ray.engine.prune import kept_count, pruned_state, topk_mask
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import Trainer
from autosrh_ray.methods.model import build_model, model_from_state


def feature_space(num_features: int, num_fields: int) -> FeatureSpace:
    """Zipf-like counts over ``num_fields`` categorical fields, ``num_features`` features in all."""
    per_field = num_features // num_fields
    fields = [FieldSpec(f"C{f}", "categorical") for f in range(num_fields)]
    counts = [{str(v): int(1e6 / (v + 1)) + 1 for v in range(per_field - 1)} for _ in fields]
    return FeatureSpace.from_counts(fields, counts, [None] * num_fields)


def batches(space: FeatureSpace, batch_size: int, count: int, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = np.stack([v.ids[np.minimum(rng.zipf(1.2, batch_size) - 1, len(v.ids) - 1)]
                        for v in space.vocabs], axis=1)
        labels = (rng.random(batch_size) < 0.25).astype(np.float32)
        out.append(Batch.from_numpy(ids, np.ones(ids.shape, np.float32), labels))
    return out


def variants(space, overrides, optimizer):
    """name → (step callable taking (train_batch, valid_batch))."""
    def cfg(*extra):
        return load_config(overrides=[*overrides, f"train.embedding_optimizer={optimizer}", *extra])

    torch.manual_seed(0)
    ue = Trainer(build_model(cfg("search.method=uniform"), space, 0.25), "classification", 1e-3)
    first_model = build_model(cfg(), space, 0.25)
    first = BiLevelSearch(first_model, "classification", order="first")
    second_model = build_model(cfg(), space, 0.25)
    second = BiLevelSearch(second_model, "classification", order="second")
    searched = build_model(cfg(), space, 0.25)
    keep = kept_count(searched.embedding.num_features, searched.embedding.dim, 10)
    retrain_model = model_from_state(cfg(), space, 0.25, pruned_state(searched, keep))
    retrain = Trainer(retrain_model, "classification", 1e-3)
    masked_model = copy.deepcopy(searched)
    masked_model.embedding = MaskedEmbedding(searched.embedding, topk_mask(searched.embedding.pruning_scores(), keep))
    masked = Trainer(masked_model, "classification", 1e-3)
    return {
        "ue": lambda t, v: ue.step(t),
        "search_first": lambda t, v: first.step(t, v),
        "search_second": lambda t, v: second.step(t, v),
        "retrain": lambda t, v: retrain.step(t),
        "retrain_masked": lambda t, v: masked.step(t),
    }


def measure(steps_by_name, train, valid, rounds: int, steps: int) -> dict[str, float]:
    """Median rows/s per variant over interleaved rounds."""
    per_round: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for name, step in steps_by_name.items():  # warm-up (allocations, Adam state)
        for i in range(2):
            step(train[i % len(train)], valid[i % len(valid)])
    for r in range(rounds):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            for i in range(steps):
                step(train[(r * steps + i) % len(train)], valid[(r * steps + i) % len(valid)])
            per_round[name].append(steps * len(train[0]) / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in per_round.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small table and few rounds (< 2 min on 2 cores)")
    parser.add_argument("--json", help="write the figures as one flat JSON object")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_blocks()  # as every training loop of the workflow does (allocator.py: glibc's large blocks)
    num_features, rounds, steps = (200_000, 3, 3) if args.quick else (1_000_000, 5, 5)
    num_fields, batch_size = 26, 4096
    overrides = ["model.name=deepfm", "model.hidden=[400, 400, 400]", "search.K=16", "search.L=6"]
    space = feature_space(num_features, num_fields)
    train, valid = batches(space, batch_size, 6, 1), batches(space, batch_size, 6, 2)
    figures: dict[str, float] = {"num_features": space.num_features, "num_fields": num_fields,
                                 "batch_size": batch_size, "K": 16, "threads": args.threads}
    for optimizer in ("adam", "sparse_adam"):
        rates = measure(variants(space, overrides, optimizer), train, valid, rounds, steps)
        for name, rate in rates.items():
            figures[f"{optimizer}_{name}_rows_per_s"] = round(rate, 1)
            if name != "ue":
                figures[f"{optimizer}_{name}_vs_ue"] = round(rate / rates["ue"], 3)
        figures[f"{optimizer}_retrain_vs_masked"] = round(rates["retrain"] / rates["retrain_masked"], 3)
    figures["sparse_vs_dense_ue"] = round(figures["sparse_adam_ue_rows_per_s"] / figures["adam_ue_rows_per_s"], 3)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)


if __name__ == "__main__":
    main()
