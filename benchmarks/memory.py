"""Peak memory of UE training, AutoSrh's search and the retrain at CR = 10 and 20, side by side in one run.

FM with M features, K = 64, 26 fields, batch 256 (so the embedding table, not the activations, dominates), the
default dense Adam. Every phase runs in a subprocess of its own with the engine's real stage functions
(``training.fit`` / ``training.search``: steps, a whole-split evaluation, the best-state copy) and reports its own
peak RSS (VmHWM, never computed from tensor shapes):

* ``ue``: a uniform model trained for two evaluation periods;
* ``search``: AutoSrh's bi-level search for two periods, then pruning to CR = 10 and 20 (written to disk packed);
* ``retrain_cr10`` / ``retrain_cr20``: the retrain of that pruned state, in the packed layout, two periods;
* ``retrain_cr10_int8`` / ``retrain_cr10_int4``: the same retrain quantisation-aware (``prune.quant_aware``: the
  forward reads the values as int8 / int4 codes would);
* ``scorer_cr10_fp32`` / ``_int8`` / ``_int4``: the CR = 10 artifact stored at that precision, loaded
  (``artifact.load_model``: codes stay codes) and scoring the validation batches;
* ``interpreter``: Python with torch and autosrh_ray imported (what every phase pays before any table).

Ratios are peak RSS ÷ UE's peak RSS at the largest M (``*_above_interpreter``: both minus the interpreter).
Targets (issue 12): search ≤ 1.1× UE; retrain at CR = 10 ≤ 0.3× UE.

    python benchmarks/memory.py --quick --json memory.json     # M = 2M (about 2 minutes on 2 cores)
    python benchmarks/memory.py --json memory.json             # M = 1M and 5M
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

K, FIELDS, BATCH, STEPS, VALID_BATCHES = 64, 26, 256, 12, 4
CRS = (10, 20)
PRECISIONS = ("int8", "int4")  # the quantisation-aware retrain and the loaded scorer below fp32
SCORED = ("fp32", *PRECISIONS)


def _batches(m: int, count: int, seed: int):
    """Zipf-like ids over M features (popular ids first, as frequency-ordered ids are)."""
    import numpy as np

    from autosrh_ray.engine.batch import Batch

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = np.minimum(rng.zipf(1.1, (BATCH, FIELDS)) - 1, m - 1).astype(np.int64)
        labels = (rng.random(BATCH) < 0.25).astype(np.float32)
        out.append(Batch.from_numpy(ids, np.ones(ids.shape, np.float32), labels))
    return out


def phase(name: str, m: int, work: Path) -> None:
    """Run one phase in this process and print its peak RSS in bytes."""
    import torch

    from autosrh_ray.artifact.format import load_model, save_model
    from autosrh_ray.config import load_config
    from autosrh_ray.distributed.loops import ModelShape
    from autosrh_ray.engine.packed import quantisation_aware
    from autosrh_ray.engine.prune import kept_count, pruned_state
    from autosrh_ray.engine.search import BiLevelSearch
    from autosrh_ray.engine.training import StopRule, fit, search
    from autosrh_ray.methods.model import build_model, model_from_state

    torch.set_num_threads(2)
    shape = ModelShape(m, FIELDS)
    method = "uniform" if name == "ue" else "autosrh"
    config = load_config(overrides=["model.name=fm", f"search.K={K}", f"search.method={method}",
                                    f"train.batch_size={BATCH}"])
    rule = StopRule(max_epochs=2, patience=5)
    if name != "interpreter":
        train, valid = _batches(m, STEPS, 1), _batches(m, VALID_BATCHES, 2)
        torch.manual_seed(0)
        if name == "ue":
            fit(build_model(config, shape, 0.25), lambda e: train, lambda e: valid, "classification", 1e-3, rule)
        elif name == "search":
            model = build_model(config, shape, 0.25)
            searcher = BiLevelSearch(model, "classification", lr=1e-3)
            search(model, searcher, lambda e: train, lambda e: valid, lambda e: valid, "classification", rule)
            del searcher  # the search's optimiser state ends with the stage, as in the pipeline
            for cr in CRS:
                torch.save(pruned_state(model, kept_count(m, K, cr)), work / f"pruned-cr{cr}.pt")
        elif name == "store":  # the artifacts the scorer phases load (a phase of its own, not reported)
            cr10 = model_from_state(config, shape, 0.25, torch.load(work / "pruned-cr10.pt", weights_only=True))
            for precision in SCORED:
                save_model(cr10, work / f"model-cr10-{precision}.pt", "fm", FIELDS, {}, precision)
        elif name.startswith("scorer"):
            model = load_model(work / f"model-cr10-{name.split('_')[2]}.pt")
            with torch.no_grad():
                for batch in valid:
                    model(batch.ids, batch.values)
        else:
            state = torch.load(work / f"pruned-{name.split('_')[1]}.pt", weights_only=True)
            if name.count("_") == 2:  # retrain_cr10_int8: quantisation-aware
                state = quantisation_aware(state, name.split("_")[2], (0,))
            model = model_from_state(config, shape, 0.25, state)
            del state
            fit(model, lambda e: train, lambda e: valid, "classification", 1e-3, rule)
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak over fork and exec)
    print(int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024)


def peak_rss(name: str, m: int, work: Path) -> int:
    done = subprocess.run([sys.executable, __file__, "--phase", name, "--m", str(m), "--work", str(work)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} (M={m}) failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.split()[-1])


def measure(m: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="autosrh-memory-") as tmp:
        work = Path(tmp)
        names = ("interpreter", "ue", "search", *(f"retrain_cr{cr}" for cr in CRS),
                 *(f"retrain_cr10_{p}" for p in PRECISIONS), "store", *(f"scorer_cr10_{p}" for p in SCORED))
        peaks = {name: peak_rss(name, m, work) for name in names}  # in order: the search prunes, store writes
        del peaks["store"]
        return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="M = 2M only")
    parser.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--m", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args.phase, args.m, args.work)
        return 0
    sizes = [2_000_000] if args.quick else [1_000_000, 5_000_000]
    out: dict[str, float] = {"K": K, "batch_size": BATCH}
    print(f"FM, K={K}, batch {BATCH}, dense Adam; peak RSS per phase, each in its own process")
    print(f"{'M':>10} {'phase':>14} {'peak MiB':>9} {'÷ UE':>6} {'÷ UE above interp.':>19}")
    for m in sizes:
        peaks = measure(m)
        base, ue = peaks["interpreter"], peaks["ue"]
        for name, peak in peaks.items():
            out[f"m{m}_{name}_peak_bytes"] = peak
            print(f"{m:>10,} {name:>14} {peak / 2**20:>9,.0f} {peak / ue:>6.2f} {(peak - base) / (ue - base):>19.2f}")
        for name in ("search", *(f"retrain_cr{cr}" for cr in CRS)):
            out[f"m{m}_{name}_to_ue"] = peaks[name] / ue
            out[f"m{m}_{name}_to_ue_above_interpreter"] = (peaks[name] - base) / (ue - base)
    largest = sizes[-1]
    out["M"] = largest
    for name in ("search", *(f"retrain_cr{cr}" for cr in CRS)):
        out[f"{name}_to_ue"] = out[f"m{largest}_{name}_to_ue"]
        out[f"{name}_to_ue_above_interpreter"] = out[f"m{largest}_{name}_to_ue_above_interpreter"]
    base = out[f"m{largest}_interpreter_peak_bytes"]
    for name in (*(f"retrain_cr10_{p}" for p in PRECISIONS), *(f"scorer_cr10_{p}" for p in PRECISIONS)):
        reference = "retrain_cr10" if name.startswith("retrain") else "scorer_cr10_fp32"
        out[f"{name}_to_fp32_above_interpreter"] = ((out[f"m{largest}_{name}_peak_bytes"] - base)
                                                    / (out[f"m{largest}_{reference}_peak_bytes"] - base))
    print(f"M = {largest:,}: search {out['search_to_ue']:.2f}× UE (target ≤ 1.1), retrain CR10 "
          f"{out['retrain_cr10_to_ue']:.2f}× (target ≤ 0.3), CR20 {out['retrain_cr20_to_ue']:.2f}×; above the "
          f"interpreter, against fp32: quantisation-aware retrain int8 "
          f"{out['retrain_cr10_int8_to_fp32_above_interpreter']:.2f}×, int4 "
          f"{out['retrain_cr10_int4_to_fp32_above_interpreter']:.2f}×; loaded scorer int8 "
          f"{out['scorer_cr10_int8_to_fp32_above_interpreter']:.2f}×, int4 "
          f"{out['scorer_cr10_int4_to_fp32_above_interpreter']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
