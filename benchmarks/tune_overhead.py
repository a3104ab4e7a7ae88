"""What a Ray Tune study costs over running its trials yourself, side by side in one process:

* **back to back**: N trial configs (K values) run one after another in the driver the way the workflow runs a
  config — a search Train run, pruning to the study budget (a Ray task), a brief retrain Train run;
* **study**: the same N configs as a Ray Tune study under a FIFO scheduler (no early stopping), through
  :func:`autosrh_ray.study.run_study` (a Train V2 driver function per trial, ``TuneReportCallback``; a trial runs
  its search, pruning and retrain in one Train run);
* **back to back, one run each**: the trials' own one-Train-run stages in the driver, without Tune — what Tune
  itself adds;
* **study in process** (``ray.num_workers: 0``): the same study with each trial's loops in its own Tune actor
  (no Train run) — what small data gains by skipping Ray Train;

and each trial's fixed cost: its wall time outside the training loops (Train start-up, pruning, reporting).
The three are run in alternating rounds and the median round is reported. Target: the study no slower than
the back-to-back runs (ratio ≤ 1).

    python benchmarks/tune_overhead.py --quick --json tune.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from autosrh_ray.artifact.budget import study_budget
from autosrh_ray.config import load_config, with_overrides
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.distributed.resources import cluster_cpus
from autosrh_ray.distributed.stages import make_runner
from autosrh_ray.runtime import connect
from autosrh_ray.study import run_study, trial_stages


def base_config(rows: int, trials: int):
    ks = [4, 6, 8, 12, 16, 24][:trials]
    return load_config(None, [f"dataset.synthetic.rows={rows}", "model.name=fm", "search.K=8", "search.L=4",
                              "train.batch_size=1024", "search.max_epochs=3", "train.patience=3",
                              "tune.enabled=true", f"tune.search_space={{search.K: {ks}}}", "tune.scheduler=fifo",
                              "tune.retrain_epochs=2", "report.reference=none"]), ks


def back_to_back(config, prepared, ks, storage: str, round_: int, separate: bool) -> tuple[float, list[float]]:
    """Every config run in the driver, one after another (``separate``: as the workflow runs a config, else as
    a study trial does); (seconds, fixed seconds per run)."""
    budget = study_budget(config.prune, prepared.num_features, config.search.K)
    start, fixed = time.perf_counter(), []
    for k in ks:
        trial = with_overrides(config, {"search.K": k})
        runner = make_runner(trial, prepared, log=lambda _: None, storage=storage, name=f"b2b{round_}-k{k}")
        t = time.perf_counter()
        search, retrain, _ = trial_stages(trial, prepared, runner, budget, separate)
        fixed.append(time.perf_counter() - t - search.loop_seconds - retrain.loop_seconds)
    return time.perf_counter() - start, fixed


def study(config, prepared, storage: str) -> tuple[float, list[float]]:
    """The study through :func:`run_study`; (seconds, fixed seconds per trial)."""
    start = time.perf_counter()
    result = run_study(config, prepared, storage, log=lambda _: None)
    return time.perf_counter() - start, [t.fixed_seconds for t in result.trials]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 trials on 20k rows, 3 rounds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trials, rows, rounds = (2, 20_000, 3) if args.quick else (4, 60_000, 3)
    config, ks = base_config(rows, trials)
    connect(config.ray)  # a private local Ray, started as the workflow starts it
    figures: dict = {"trials": trials, "rows": rows, "rounds": rounds, "cluster_cpus": cluster_cpus()}
    times: dict[str, list[float]] = {"back_to_back": [], "study": [], "one_run_back_to_back": [],
                                     "study_in_process": []}
    in_process = with_overrides(config, {"ray.num_workers": 0})
    fixed: dict[str, list[float]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory(prefix="autosrh-tune-") as work:
        prepared = prepare_synthetic(config, Path(work) / "data")
        for r in range(rounds):
            runs = {"back_to_back": lambda: back_to_back(config, prepared, ks, f"{work}/b2b{r}", r, True),
                    # a fresh storage per round: a restored study would not run its finished trials again
                    "study": lambda: study(config, prepared, f"{work}/study{r}"),
                    "one_run_back_to_back": lambda: back_to_back(config, prepared, ks, f"{work}/one{r}", r, False),
                    "study_in_process": lambda: study(in_process, prepared, f"{work}/inproc{r}")}
            for kind, go in runs.items():
                seconds, per_trial = go()
                times[kind].append(seconds)
                fixed[kind] += per_trial
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    for kind in times:
        figures[f"{kind}_seconds"] = statistics.median(times[kind])
        figures[f"{kind}_fixed_seconds_median"] = statistics.median(fixed[kind])
    figures["ratio_study_vs_back_to_back"] = figures["study_seconds"] / figures["back_to_back_seconds"]
    figures["ratio_study_vs_one_run_back_to_back"] = figures["study_seconds"] / figures["one_run_back_to_back_seconds"]
    figures["ratio_study_in_process_vs_study"] = figures["study_in_process_seconds"] / figures["study_seconds"]
    print(f"\n{trials} trials, {rows} rows, median of {rounds} rounds")
    print("| | wall s | fixed s per trial (median) |\n|---|---|---|")
    for kind, label in (("back_to_back", "back to back (as the workflow runs a config)"),
                        ("study", "study (FIFO)"), ("one_run_back_to_back", "back to back, a trial's one run each"),
                        ("study_in_process", "study, trials in process (ray.num_workers: 0)")):
        print(f"| {label} | {figures[kind + '_seconds']:.1f} | {figures[kind + '_fixed_seconds_median']:.1f} |")
    print(f"study ÷ back to back: {figures['ratio_study_vs_back_to_back']:.2f}×; what Tune adds: "
          f"{figures['ratio_study_vs_one_run_back_to_back']:.2f}×; in process ÷ study: "
          f"{figures['ratio_study_in_process_vs_study']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
