"""Quality at the same budget: UE, magnitude pruning and AutoSrh with the same early-stopping rule, several seeds,
on real data samples and the quickstart's synthetic data. Every stage stops when its validation loss stops
improving; the test split is read once per run, at the end.

Prints one table per dataset/backbone — mean ± std of the test metric over seeds, Δ vs UE, kept embedding
parameters, evaluations per stage with their stop reasons, seconds per stage — and, per method, the validation
metric of the soft (searched, unpruned) model, right after pruning and after retraining ("soft → pruned →
retrained"). AutoSrh fits α on the validation split (the paper's Eq. 11), so its validation numbers are
optimistic: read quality from test.

    python benchmarks/quality.py --quick --json quality.json        # MovieLens (MF) + synthetic (FM), 3 seeds
    python benchmarks/quality.py --json quality-full.json           # + second order, Amazon, Criteo, Avazu, 1M rows
    python benchmarks/quality.py --quick --variants --holdout       # options past the paper, judged on held-out
                                                                    # train rows (data α never saw), not on test
    python benchmarks/quality.py --bytes --json quality-bytes.json  # the bytes table (below)
    python benchmarks/quality.py --benches criteo-dcnv2,avazu-dcnv2   # DCN-V2 (K 16) on the real CTR samples

``--bytes``: per dataset and seed one workflow run (in-process, ``ray.num_workers: 0``) with the UE reference,
AutoSrh at CR 10 (fp32) and byte budgets ``bytes_cr`` 40 and 100 under ``prune.precision: auto`` — each budget's
candidates (fp32, fp16, int8, int4 with scales per row and again per block and dimension, and the per-block ones,
as many entries as fit each) retrained and the one validation prefers kept; each integer candidate has a row of
its own. The table gives test metrics beside the embedding bytes the artifacts hold, and AutoSrh
fp32 at the same bytes (the budget's fp32 candidate) against two choices by validation: among the budget's own
candidates (the precision alone), and among every candidate that fits (a tighter budget's too — the workflow's
choice: a budget is a ceiling); beside them magnitude pruning at the same byte budgets, chosen the same way (a
second run). ``--quick``: synthetic FM and MovieLens MF.

``--holdout`` sets 10% of the training rows aside (hashed, fixed) and reports the metric on them instead of test:
the way to choose between options without looking at test. Runs are in-process (the engine's loops, the same
stage graph as the Ray path); real-data samples are read from ``--data`` (default ``../shared/data``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from autosrh_ray.config import load_config, with_overrides
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.data.prepared import EncodedSplit, PreparedData
from autosrh_ray.engine.batch import iterate_batches
from autosrh_ray.engine.metrics import validation_loss
from autosrh_ray.engine.training import evaluate
from autosrh_ray.methods.in_process import run_all_in_process

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "workflows" / "quickstart.yaml"
SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Bench:
    """One dataset × backbone: where its rows are and the config overrides (defaults otherwise)."""

    name: str
    model: str
    overrides: tuple = ()
    sample: str = ""  # path under --data; "" = the quickstart's synthetic data
    config: Path = QUICKSTART


BENCHES = {
    "movielens-mf": Bench("movielens", "mf", ("dataset.name=movielens", "search.K=64", "search.L=10"),
                          "movielens/ratings.csv", None),
    "synthetic-fm": Bench("synthetic", "fm"),
    "synthetic1m-fm": Bench("synthetic1m", "fm", ("dataset.synthetic.rows=1000000",)),
    "amazon-mf": Bench("amazon", "mf", ("dataset.name=amazon", "search.K=64", "search.L=10"),
                       "amazon/ratings_Electronics_sample.csv", None),
    "amazon-neumf": Bench("amazon", "neumf", ("dataset.name=amazon", "search.K=64", "search.L=10"),
                          "amazon/ratings_Electronics_sample.csv", None),
    "criteo-fm": Bench("criteo", "fm", ("dataset.name=criteo", "search.K=64", "search.L=6"),
                       "criteo/dac_sample.txt", None),
    "avazu-fm": Bench("avazu", "fm", ("dataset.name=avazu", "search.K=64", "search.L=6"),
                      "avazu/train_sample.csv", None),
    # DCN-V2 at K 16, as the BARS benchmarks run it (its built-in defaults: 2 low-rank cross layers, tower 200x200)
    "criteo-dcnv2": Bench("criteo-dcnv2", "dcnv2", ("dataset.name=criteo", "search.K=16", "search.L=6"),
                          "criteo/dac_sample.txt", None),
    "avazu-dcnv2": Bench("avazu-dcnv2", "dcnv2", ("dataset.name=avazu", "search.K=16", "search.L=6"),
                         "avazu/train_sample.csv", None),
}
QUICK = ("movielens-mf", "synthetic-fm")
BYTES_BENCHES = ("synthetic-fm", "movielens-mf", "amazon-mf", "criteo-fm", "avazu-fm")
BYTE_CRS = (40, 100)
FULL = tuple(BENCHES)

# name → overrides: the methods, and (--variants) AutoSrh's options past the paper.
METHODS = {"uniform": ("search.method=uniform",), "magnitude": ("search.method=magnitude",),
           "autosrh": ("search.method=autosrh",)}
SECOND_ORDER = {"autosrh-2nd": ("search.method=autosrh", "search.order=second")}
VARIANTS = {
    "autosrh+alpha_train": ("search.method=autosrh", "search.alpha_data=train"),
    "autosrh+rewound": ("search.method=autosrh", "prune.retrain_from=rewound"),
    "magnitude+rewound": ("search.method=magnitude", "prune.retrain_from=rewound"),
}


@dataclass
class Runs:
    """Per-seed results of one method on one bench."""

    metric: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    soft: list = field(default_factory=list)
    pruned: list = field(default_factory=list)
    retrained: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)  # stage → list of (epochs, stop_reason, seconds)


def prepared_data(bench: Bench, data_root: Path, work: Path) -> PreparedData:
    config = load_config(bench.config, [*bench.overrides, f"model.name={bench.model}", *_path(bench, data_root)])
    out = work / bench.name
    if bench.sample:
        import logging

        import ray

        from autosrh_ray.data.prepare import prepare

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        return prepare(config, out)
    return prepare_synthetic(config, out)


def _path(bench: Bench, data_root: Path) -> list[str]:
    if not bench.sample:
        return []
    path = data_root / bench.sample
    if not path.exists():
        sys.exit(f"quality.py: {path} is missing (real-data samples are read from --data)")
    return [f"dataset.path={path}"]


def holdout(train: EncodedSplit, fraction: float = 0.1) -> tuple[EncodedSplit, EncodedSplit]:
    """(train without the held-out rows, the held-out rows): a fixed 10% of train that no stage ever sees."""
    pick = np.random.default_rng(12345).random(len(train)) < fraction
    part = [EncodedSplit(train.ids[m], train.values[m], train.labels[m]) for m in (~pick, pick)]
    return part[0], part[1]


def run_one(bench: Bench, prepared: PreparedData, overrides: tuple, seed: int, data_root: Path,
            splits: dict) -> dict:
    config = load_config(bench.config, [*bench.overrides, f"model.name={bench.model}", *_path(bench, data_root),
                                        *overrides, f"train.seed={seed}"])
    train, valid, judge = splits["train"], splits["valid"], splits["judge"]
    result = run_all_in_process(config, prepared, train, valid, log=lambda _: None, evaluate_pruned=True)[0]
    key = "auc" if config.task == "classification" else "mse"
    metrics = evaluate(result.model, iterate_batches(judge, 8192), config.task)
    search = result.search
    return {"metric": metrics[key], "key": key,
            "kept": result.model.embedding.kept_count(),
            "soft": search.best_valid.get(key, float("nan")) if search else float("nan"),
            "pruned": (result.pruned_valid or {}).get(key, float("nan")),
            "retrained": result.retrain.best_valid[key],
            "stages": {n: (r.epochs, r.stop_reason, r.seconds) for n, r in result.stages.items()},
            "searched_alpha": result.searched_alpha,  # (L, K) as the search left it; None but for AutoSrh
            "kept_per_feature": result.model.embedding.kept_per_feature()}


def _ms(values) -> str:
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "–"
    return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MovieLens (MF) + synthetic (FM), first order")
    parser.add_argument("--benches", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--variants", action="store_true", help="also AutoSrh's options past the paper")
    parser.add_argument("--holdout", action="store_true", help="judge on 10%% held-out train rows, not on test")
    parser.add_argument("--bytes", action="store_true", help="the bytes table: UE, AutoSrh CR 10, bytes_cr 40/100")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--keep", type=Path, help="--bytes: keep the runs (prepared data, reports, artifacts) here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="--bytes: a config override for every run (e.g. prune.quant_aware=true)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.bytes:
        return bytes_table(args)
    benches = args.benches.split(",") if args.benches else (QUICK if args.quick else FULL)
    methods = dict(METHODS)
    if not args.quick:
        methods.update(SECOND_ORDER)
    if args.variants:
        methods.update(VARIANTS)
    seeds = SEEDS[:args.seeds] if args.seeds <= len(SEEDS) else tuple(range(1, args.seeds + 1))
    judged_on = "held-out train rows" if args.holdout else "test"
    figures: dict = {"seeds": len(seeds), "judged_on": judged_on}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autosrh-quality-") as work:
        for bench_name in benches:
            bench = BENCHES[bench_name]
            prepared = prepared_data(bench, args.data, Path(work))
            train, valid = prepared.load_split("train"), prepared.load_split("valid")
            if args.holdout:
                train, judge = holdout(train)
            else:
                judge = prepared.load_split("test")
            splits = {"train": train, "valid": valid, "judge": judge}
            results = {}
            for name, overrides in methods.items():
                runs = Runs()
                for seed in seeds:
                    r = run_one(bench, prepared, overrides, seed, args.data, splits)
                    key = r["key"]
                    for attr in ("metric", "kept", "soft", "pruned", "retrained"):
                        getattr(runs, attr).append(r[attr])
                    for stage, figs in r["stages"].items():
                        runs.stages.setdefault(stage, []).append(figs)
                results[name] = runs
                print(f"  {bench_name} {name}: {_ms(runs.metric)}", file=sys.stderr, flush=True)
            _print_table(bench_name, key, judged_on, results, figures)
    figures["seconds"] = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _print_table(bench_name: str, key: str, judged_on: str, results: dict, figures: dict) -> None:
    ue = statistics.mean(results["uniform"].metric)
    better = max if key == "auc" else min
    print(f"\n### {bench_name} — {key.upper()} on {judged_on} ({'higher' if key == 'auc' else 'lower'} is better)\n")
    print(f"| method | {key} | Δ vs UE | kept params | valid: soft → pruned → retrained | stages: evaluations "
          f"(stop reasons) | seconds per stage |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        mean = statistics.mean(runs.metric)
        delta = mean - ue if key == "auc" else (mean / ue - 1) * 100
        delta_text = f"{delta:+.4f}" if key == "auc" else f"{delta:+.2f}%"
        stages = "; ".join(f"{s} {'/'.join(str(e) for e, _, _ in v)} ({', '.join(sorted({r for _, r, _ in v}))})"
                           for s, v in runs.stages.items())
        seconds = "; ".join(f"{s} {statistics.mean(t for _, _, t in v):.1f}" for s, v in runs.stages.items())
        valid = " → ".join(f"{statistics.mean(x):.4f}" if not np.isnan(statistics.mean(x)) else "–"
                           for x in (runs.soft, runs.pruned, runs.retrained))
        print(f"| {name} | {_ms(runs.metric)} | {delta_text} | {int(statistics.mean(runs.kept))} | {valid} | "
              f"{stages} | {seconds} |")
        prefix = f"{bench_name}_{name}"
        figures[f"{prefix}_{key}_mean"] = mean
        figures[f"{prefix}_{key}_std"] = statistics.pstdev(runs.metric)
        figures[f"{prefix}_{key}_ratio_to_uniform"] = mean / ue
        figures[f"{prefix}_kept"] = int(statistics.mean(runs.kept))
        figures[f"{prefix}_capped_stages"] = sum(r == "max_epochs" for v in runs.stages.values() for _, r, _ in v)
        for s, v in runs.stages.items():
            figures[f"{prefix}_{s}_epochs_mean"] = statistics.mean(e for e, _, _ in v)
            figures[f"{prefix}_{s}_seconds_mean"] = statistics.mean(t for _, _, t in v)
    best = better(results, key=lambda n: statistics.mean(results[n].metric))
    print(f"\nbest: {best}")


def bytes_run(bench: Bench, prepared: PreparedData, seed: int, data_root: Path, out: Path,
              extra: tuple[str, ...] = ()) -> dict:
    """One workflow run of ``bench``: UE, AutoSrh CR 10 and the byte budgets; per row its test metric, embedding
    bytes, bytes CR and precision. ``extra``: config overrides for both runs (``--set``)."""
    from autosrh_ray import workflow

    config = load_config(bench.config, [*bench.overrides, f"model.name={bench.model}", *_path(bench, data_root),
                                        "search.method=autosrh", "prune.cr=10",
                                        f"prune.bytes_cr=[{', '.join(str(c) for c in BYTE_CRS)}]",
                                        f"train.seed={seed}", "ray.num_workers=0", "report.plots=false",
                                        "report.reference=uniform", *extra])
    report = workflow.run(config, out, prepared=prepared, log=lambda _: None)
    key = "auc" if config.task == "classification" else "mse"

    def text(precision, int_scales=None) -> str:  # one precision, or one per block; "(dim)": dim scales
        return (precision if isinstance(precision, str) else "/".join(precision)) + \
            (" (dim)" if int_scales == "dim" else "")

    def row(entry: dict) -> dict:
        chosen = next((r for r in entry.get("candidates", ()) if r["chosen"]), None)
        precision = text(entry["precision"], entry.get("int_scales"))
        if chosen is not None and chosen["budget"] != entry["budget"]:  # a tighter budget's candidate
            precision += f" of {chosen['budget']}"
        return {"metric": entry["test"][key], "bytes": entry["bytes"]["embedding"],
                "bytes_cr": entry["bytes"]["bytes_cr"], "precision": precision,
                "valid": (chosen or entry)["valid"][key]}

    def candidate_row(entry: dict, candidate: dict) -> dict:
        return {"metric": candidate["test"][key], "bytes": candidate["bytes"], "valid": candidate["valid"][key],
                "bytes_cr": entry["bytes"]["dense_fp32"] / candidate["bytes"],
                "precision": text(candidate["precision"], candidate.get("int_scales"))}

    rows = {"UE fp32": row(report["reference"])}
    by_budget = {m["budget"]: m for m in report["models"]}
    rows["AutoSrh fp32 CR 10"] = row(by_budget["cr10"])
    for c in BYTE_CRS:
        chosen = by_budget[f"bytes_cr{c}"]
        own = [r for r in chosen["candidates"] if r["budget"] == f"bytes_cr{c}"]
        fp32 = next(r for r in own if r["precision"] == "fp32")
        rows[f"AutoSrh fp32 @ bytes_cr {c}"] = candidate_row(chosen, fp32)
        for r in own:  # each integer candidate, its scales per row and per block and dimension
            if r["precision"] in ("int8", "int4"):
                rows[f"AutoSrh {r['precision']} {r.get('int_scales', 'row')} scales @ bytes_cr {c}"] = \
                    candidate_row(chosen, r)
        # the precision validation prefers among the budget's own candidates (its bytes filled)
        own_choice = min(own, key=lambda r: validation_loss(config.task, r["valid"]))
        rows[f"AutoSrh + precision, own budget @ bytes_cr {c}"] = candidate_row(chosen, own_choice)
        # ... and among every candidate that fits (a tighter budget's too): the workflow's choice
        rows[f"AutoSrh + precision @ bytes_cr {c}"] = row(chosen)
    # magnitude pruning (UE trained, |E| pruned, retrained) at the same byte budgets and precision candidates
    magnitude = with_overrides(config, {"search.method": "magnitude", "prune.cr": [], "report.reference": "none"})
    report = workflow.run(magnitude, out / "magnitude", prepared=prepared, log=lambda _: None)
    for c in BYTE_CRS:
        rows[f"Magnitude + precision @ bytes_cr {c}"] = row(next(m for m in report["models"]
                                                                if m["budget"] == f"bytes_cr{c}"))
    return {"key": key, "rows": rows}


@contextlib.contextmanager
def _work_dir(keep: Optional[Path], prefix: str):
    """``keep`` (created; left for later study), else a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield str(keep)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        yield work


def bytes_table(args) -> int:
    """``--bytes``: the table of test metric against embedding bytes (module docstring)."""
    benches = args.benches.split(",") if args.benches else (QUICK if args.quick else BYTES_BENCHES)
    seeds = SEEDS[:args.seeds] if args.seeds <= len(SEEDS) else tuple(range(1, args.seeds + 1))
    figures: dict = {"seeds": len(seeds)}
    start = time.perf_counter()
    wins = []
    with _work_dir(args.keep, "autosrh-quality-bytes-") as work:
        for bench_name in benches:
            bench = BENCHES[bench_name]
            prepared = prepared_data(bench, args.data, Path(work))
            runs = [bytes_run(bench, prepared, seed, args.data, Path(work) / f"{bench_name}-{seed}", tuple(args.set))
                    for seed in seeds]
            key = runs[0]["key"]
            ue = statistics.mean(r["rows"]["UE fp32"]["metric"] for r in runs)
            print(f"\n### {bench_name} — test {key.upper()} against embedding bytes ({len(seeds)} seeds)\n")
            print(f"| model | test {key} | Δ vs UE | embedding KiB | bytes CR | precision chosen (per seed) |")
            print("|---|---|---|---|---|---|")
            means = {}
            for name in runs[0]["rows"]:
                cells = [r["rows"][name] for r in runs]
                mean = means[name] = statistics.mean(c["metric"] for c in cells)
                delta = f"{mean - ue:+.4f}" if key == "auc" else f"{(mean / ue - 1) * 100:+.2f}%"
                precisions = "; ".join(c["precision"] for c in cells)
                kib = statistics.mean(c["bytes"] for c in cells) / 1024
                bcr = statistics.mean(c["bytes_cr"] for c in cells)
                print(f"| {name} | {_ms([c['metric'] for c in cells])} | {delta} | {kib:,.1f} | {bcr:.1f} | "
                      f"{precisions} |")
                tag = name.lower().replace(" + ", "_").replace(" @ ", "_").replace(" ", "_")
                figures[f"{bench_name}_{tag}_{key}_mean"] = mean
                figures[f"{bench_name}_{tag}_bytes_cr"] = bcr
                # validation (a candidate's: on the rows it was chosen on): what options are decided on, not test
                figures[f"{bench_name}_{tag}_valid_{key}_mean"] = statistics.mean(c["valid"] for c in cells)
                figures[f"{bench_name}_{tag}_delta_vs_ue"] = mean - ue if key == "auc" else mean / ue - 1
            for c in BYTE_CRS:
                fp32 = means[f"AutoSrh fp32 @ bytes_cr {c}"]
                for label, name in (("precision", f"AutoSrh + precision @ bytes_cr {c}"),
                                    ("precision_own_budget", f"AutoSrh + precision, own budget @ bytes_cr {c}")):
                    better = means[name] > fp32 if key == "auc" else means[name] < fp32
                    figures[f"{bench_name}_{label}_beats_fp32_at_bytes_cr{c}"] = better
                    print(f"at bytes_cr {c}: {name.split(' @')[0]} {'beats' if better else 'does not beat'} AutoSrh "
                          f"fp32 at the same budget", flush=True)
            for c in BYTE_CRS:  # the acceptance: within 0.005 AUC / 1% MSE of UE, ahead of magnitude pruning
                ours, theirs = means[f"AutoSrh + precision @ bytes_cr {c}"], means[f"Magnitude + precision @ bytes_cr {c}"]
                loss = ue - ours if key == "auc" else ours / ue - 1
                figures[f"{bench_name}_loss_vs_ue_at_bytes_cr{c}"] = loss
                figures[f"{bench_name}_within_ue_at_bytes_cr{c}"] = loss <= (0.005 if key == "auc" else 0.01)
                figures[f"{bench_name}_ahead_of_magnitude_at_bytes_cr{c}"] = \
                    ours > theirs if key == "auc" else ours < theirs
                print(f"at bytes_cr {c}: loss against UE {loss:+.4f}{'' if key == 'auc' else ' (relative MSE)'}, "
                      f"{'ahead of' if figures[f'{bench_name}_ahead_of_magnitude_at_bytes_cr{c}'] else 'behind'} "
                      f"magnitude pruning at the same bytes", flush=True)
            wins.append((figures[f"{bench_name}_precision_beats_fp32_at_bytes_cr{BYTE_CRS[0]}"],
                         figures[f"{bench_name}_precision_own_budget_beats_fp32_at_bytes_cr{BYTE_CRS[0]}"]))
    figures["sets_where_precision_beats_fp32_at_bytes_cr40"] = sum(w for w, _ in wins)
    figures["sets_where_precision_own_budget_beats_fp32_at_bytes_cr40"] = sum(w for _, w in wins)
    figures["sets"] = len(wins)
    figures["seconds"] = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
