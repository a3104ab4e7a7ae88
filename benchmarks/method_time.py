"""AutoSrh against PEP: total time to the same budget on the same data, measured side by side in one process.

Both run their whole stage graph in process (``ray.num_workers: 0``: the engine's loops, no Ray Train start-up)
on the same prepared synthetic data, backbone (FM), batch size and stopping rule: AutoSrh = bi-level search until
its validation loss stalls, pruning, retrain; PEP = threshold pruning until the kept entries reach the budget,
rewind, retrain. Rounds alternate the two methods; the median round is reported, with each stage's share and
the test AUC of each model (the paper reports AutoSrh 1.1–1.6× faster than PEP).

    python benchmarks/method_time.py --quick --json method_time.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.batch import iterate_batches
from autosrh_ray.engine.training import evaluate
from autosrh_ray.methods.in_process import run_all_in_process

METHODS = ("autosrh", "pep")


def one_run(method: str, rows: int, cr: float, prepared, splits) -> dict:
    config = load_config(overrides=[f"dataset.synthetic.rows={rows}", "model.name=fm", "search.K=16",
                                    "search.L=6", "train.batch_size=1024", f"prune.cr={cr}",
                                    f"search.method={method}", "ray.num_workers=0"])
    train, valid, test = splits
    start = time.perf_counter()
    (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
    seconds = time.perf_counter() - start
    auc = evaluate(result.model, iterate_batches(test, 4096), "classification")["auc"]
    first = result.search
    return {"seconds": seconds, "search_seconds": result.timings["search"],
            "retrain_seconds": result.timings["retrain"], "search_stop": first.stop_reason,
            "search_epochs": first.epochs, "kept": result.model.embedding.kept_count(), "test_auc": auc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120k rows, 3 rounds (a few minutes on 2 cores)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--cr", type=float, default=10.0)
    parser.add_argument("--json", help="write the figures, ratios included, as one flat JSON object")
    args = parser.parse_args()
    rows = args.rows or (120_000 if args.quick else 500_000)
    rounds = args.rounds or 3
    torch.set_num_threads(2)
    config = load_config(overrides=[f"dataset.synthetic.rows={rows}", "model.name=fm", "search.K=16"])
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_synthetic(config, tmp)
        splits = tuple(prepared.load_split(s) for s in ("train", "valid", "test"))
        runs: dict[str, list[dict]] = {m: [] for m in METHODS}
        for r in range(rounds):
            for method in (METHODS if r % 2 == 0 else METHODS[::-1]):  # alternate the order
                runs[method].append(one_run(method, rows, args.cr, prepared, splits))
                last = runs[method][-1]
                print(f"round {r}: {method:7s} {last['seconds']:6.1f} s (search {last['search_seconds']:.1f} s, "
                      f"{last['search_epochs']} evaluations, stopped by {last['search_stop']}; retrain "
                      f"{last['retrain_seconds']:.1f} s), kept {last['kept']:,}, test AUC {last['test_auc']:.4f}",
                      flush=True)
    out: dict = {"rows": rows, "rounds": rounds, "cr": args.cr}
    for method, results in runs.items():
        for key in ("seconds", "search_seconds", "retrain_seconds", "test_auc"):
            out[f"{method}_{key}_median"] = statistics.median(r[key] for r in results)
        out[f"{method}_kept"] = results[0]["kept"]
    out["ratio_pep_to_autosrh_total"] = out["pep_seconds_median"] / out["autosrh_seconds_median"]
    out["ratio_pep_to_autosrh_search"] = out["pep_search_seconds_median"] / out["autosrh_search_seconds_median"]
    print(f"median total: AutoSrh {out['autosrh_seconds_median']:.1f} s, PEP {out['pep_seconds_median']:.1f} s → "
          f"PEP / AutoSrh = {out['ratio_pep_to_autosrh_total']:.2f} (search/pruning stage alone "
          f"{out['ratio_pep_to_autosrh_search']:.2f}); test AUC AutoSrh {out['autosrh_test_auc_median']:.4f}, "
          f"PEP {out['pep_test_auc_median']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
