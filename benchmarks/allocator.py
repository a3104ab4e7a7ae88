"""Training steps with glibc's default large-block handling against :func:`autosrh_ray.engine.allocator.keep_large_blocks`
(what every training loop of the workflow now calls), side by side: the paper's Criteo setting (FM, K 64, L 6,
batch 4096, 39 fields as Criteo's 26 categorical + 13 numerical, M = 54k — the table of ``scale.py --quick``), one torch thread as a Train
worker holding one CPU has. An allocator setting holds for a whole process, so each variant runs in a fresh child
process, alternating default / kept over the rounds; per variant the median ms per step of a UE step and a
first-order search step, the minor page faults per step and the child's peak RSS.

    python benchmarks/allocator.py --quick --json allocator.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, statistics, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from autosrh_ray.engine.allocator import keep_large_blocks
if {keep}:
    assert keep_large_blocks()
from autosrh_ray.config import load_config
from autosrh_ray.methods.model import build_model
from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import Trainer
from engine_throughput import batches, feature_space
space = feature_space({features}, 39)
train, valid = batches(space, 4096, 4, 1), batches(space, 4096, 4, 2)
common = ["model.name=fm", "search.K=64", "search.L=6"]
torch.manual_seed(0)
ue = Trainer(build_model(load_config(overrides=common + ["search.method=uniform"]), space, 0.25), "classification", 1e-3)
search = BiLevelSearch(build_model(load_config(overrides=common), space, 0.25), "classification", order="first")
out = {{}}
for name, step in (("ue", lambda t, v: ue.step(t)), ("search_first", lambda t, v: search.step(t, v))):
    for i in range(2):
        step(train[i % 4], valid[i % 4])
    faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
    for i in range({steps}):
        start = time.perf_counter()
        step(train[i % 4], valid[(i + 1) % 4])
        times.append(time.perf_counter() - start)
    out[name + "_ms"] = 1000 * statistics.median(times)
    out[name + "_faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / {steps}
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(keep: bool, features: int, steps: int) -> dict:
    code = CHILD.format(repo=str(REPO), bench=str(REPO / "benchmarks"), keep=keep, features=features, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"allocator.py: a {'kept' if keep else 'default'} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 6 steps per variant (about 2 minutes)")
    parser.add_argument("--json", help="write the figures as one flat JSON object")
    parser.add_argument("--features", type=int, default=54_000)
    args = parser.parse_args()
    rounds, steps = (3, 6) if args.quick else (5, 12)
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    for _ in range(rounds):
        for variant in runs:
            runs[variant].append(child(variant == "kept", args.features, steps))
    figures: dict[str, float] = {"num_features": args.features, "num_fields": 39, "K": 64, "batch_size": 4096, "threads": 1,
                                 "rounds": rounds}
    for variant, results in runs.items():
        for key in results[0]:
            figures[f"{variant}_{key}"] = round(statistics.median(r[key] for r in results), 1)
    for step in ("ue", "search_first"):
        figures[f"{step}_speedup"] = round(figures[f"default_{step}_ms"] / figures[f"kept_{step}_ms"], 2)
    figures["peak_rss_ratio"] = round(figures["kept_peak_rss_mib"] / figures["default_peak_rss_mib"], 2)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
