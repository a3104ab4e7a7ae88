"""α's optimiser: Adam against plain SGD on the row-normalised gradient (paper Alg. 2 line 9 with Eq. 14).

The paper descends the normalised gradient of α; Eq. 14 exists so that one learning rate suits every frequency
block, which holds for a step proportional to that gradient (SGD). Adam divides each entry by its own running
RMS, so the per-row normalisation changes little and rows of α that see few gradients take Adam's full steps.
This benchmark measures, on the MovieLens sample (MF, K 64, L 10), the quickstart's synthetic data (FM) and the
Amazon sample (MF, K 64, L 10), at CR 10:

* SGD's ``search.lr_alpha`` chosen from a small grid on the first seed, never by test, two ways: by the
  retrained model's **validation** metric (``valid``; α is fitted on validation, so this favours fitting α
  longer), and by the metric on 10% of the train rows held out of the selection runs (``holdout``,
  ``quality.py --holdout``'s rows: data no stage saw);
* test metric mean ± std over seeds (1, 2, 3) for Adam (``lr_alpha`` 0.01) and SGD at each chosen lr;
* α per frequency block (mean over dimensions, then over seeds), most frequent block first: the paper's
  Fig. 7(a) has α smaller for rarer blocks; ``alpha_rank_corr`` is the rank correlation of block index (0 = most
  frequent) with α (negative = the paper's shape);
* ``--capped N``: also Adam with the search capped at N evaluations (``search.max_epochs``), to tell the
  optimiser's part in α's shape from the search's length;
* for MovieLens, two PNGs under ``--figures``: Fig. 7(a) (α per block, one line per setting, the band spans the
  dimensions' 25–75% quantiles) and Fig. 7(b) (kept dimensions after pruning against feature frequency, one
  panel per setting, seed 1).

    python benchmarks/alpha_optimizer.py --quick --json alpha_quick.json     # 1 seed, 3 lrs by validation: ~4 min
    python benchmarks/alpha_optimizer.py --capped 15 --json alpha.json       # 4 lrs, 3 seeds, figures

Reuses ``quality.py``'s benches, data preparation and runs (in-process stage graph, patience-stopped stages).
Figures and the conclusion (Adam stays the default): ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import BENCHES, ROOT, SEEDS, holdout, prepared_data, run_one  # noqa: E402

BENCH_NAMES = ("movielens-mf", "synthetic-fm", "amazon-mf")
ADAM_LR = 0.01  # the Adam setting measured (the engine's default)
SGD_GRID = (0.01, 0.1, 1.0, 10.0)
QUICK_GRID = (0.01, 0.1, 1.0)
SELECTIONS = ("valid", "holdout")
FIGURES = Path(__file__).resolve().parent / "figures"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red")


def overrides(optimizer: str, lr: float, capped: int = 0) -> tuple:
    extra = (f"search.max_epochs={capped}",) if capped else ()
    return ("search.method=autosrh", f"search.alpha_optimizer={optimizer}", f"search.lr_alpha={lr}", *extra)


def rank_corr(values) -> float:
    """Spearman's rank correlation of block index (0 = most frequent) with the values (ties get rank order)."""
    ranks = np.argsort(np.argsort(np.asarray(values)))
    return float(np.corrcoef(np.arange(len(ranks)), ranks)[0, 1]) if np.ptp(ranks) else 0.0


def _ms(values) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"


def run_setting(bench_name: str, settings: tuple, seeds, prepared, data_root, splits, label: str) -> list[dict]:
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        r = run_one(BENCHES[bench_name], prepared, settings, seed, data_root, splits)
        r["seconds"] = time.perf_counter() - start
        r["alpha_blocks"] = r["searched_alpha"].mean(dim=1).numpy()  # (L,) mean over dimensions
        r["alpha_dims"] = r["searched_alpha"].numpy()
        runs.append(r)
        print(f"  {bench_name} {label} seed {seed}: valid {r['key']} {r['retrained']:.4f}, judged "
              f"{r['metric']:.4f}, search {r['stages']['search'][0]} evaluations, α per block "
              f"{[round(float(a), 3) for a in r['alpha_blocks']]} ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return runs


def summarise(prefix: str, runs: list[dict], figures: dict) -> dict:
    key = runs[0]["key"]
    alpha = np.mean([r["alpha_blocks"] for r in runs], axis=0)
    out = {"key": key, "test": [r["metric"] for r in runs], "valid": [r["retrained"] for r in runs],
           "alpha": alpha, "alpha_dims": np.mean([r["alpha_dims"] for r in runs], axis=0),
           "evaluations": statistics.mean(r["stages"]["search"][0] for r in runs),
           "kept_seed1": runs[0]["kept_per_feature"].numpy()}
    figures[f"{prefix}_test_{key}_mean"] = statistics.mean(out["test"])
    figures[f"{prefix}_test_{key}_std"] = statistics.pstdev(out["test"])
    figures[f"{prefix}_valid_{key}_mean"] = statistics.mean(out["valid"])
    figures[f"{prefix}_search_evaluations_mean"] = out["evaluations"]
    figures[f"{prefix}_search_capped"] = sum(r["stages"]["search"][1] == "max_epochs" for r in runs)
    figures[f"{prefix}_seconds_mean"] = statistics.mean(r["seconds"] for r in runs)
    for b, a in enumerate(alpha):
        figures[f"{prefix}_alpha_block{b}"] = round(float(a), 4)
    figures[f"{prefix}_alpha_most_frequent"] = round(float(alpha[0]), 4)
    figures[f"{prefix}_alpha_rarest"] = round(float(alpha[-1]), 4)
    figures[f"{prefix}_alpha_rarest_to_most_frequent"] = round(float(alpha[-1] / max(alpha[0], 1e-9)), 4)
    figures[f"{prefix}_alpha_rank_corr"] = round(rank_corr(alpha), 4)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig7a(path: Path, results: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6), dpi=90)
    for (label, res), color in zip(results.items(), COLORS):
        dims = res["alpha_dims"]  # (L, K) averaged over seeds
        blocks = np.arange(1, dims.shape[0] + 1)
        lo, hi = np.quantile(dims, 0.25, axis=1), np.quantile(dims, 0.75, axis=1)
        ax.fill_between(blocks, lo, hi, color=color, alpha=0.12, linewidth=0)
        ax.plot(blocks, res["alpha"], "o-", color=color, markersize=4, label=label)
    ax.set_xlabel("feature block (1 = most frequent)")
    ax.set_ylabel("α (mean over dims; band: 25–75%)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(blocks)
    ax.set_title("MovieLens sample, MF, K 64, L 10, 3 seeds (cf. paper Fig. 7a)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fig7b(path: Path, frequencies: np.ndarray, panels: dict) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels), 3.0), dpi=72, sharey=True)
    freq = np.maximum(frequencies, 1)
    jitter = np.random.default_rng(0)  # integer frequencies and dims stack: spread the points a little
    for ax, (label, kept) in zip(np.atleast_1d(axes), panels.items()):
        ax.scatter(freq * np.exp(jitter.uniform(-0.2, 0.2, freq.shape)), kept + jitter.uniform(-0.4, 0.4, freq.shape),
                   s=1.5, alpha=0.25, color="tab:blue", rasterized=True)
        edges = np.unique(np.geomspace(1, freq.max() + 1, 16).astype(int))
        bins = np.digitize(freq, edges)
        mids = [(np.exp(np.log(freq[bins == b]).mean()), kept[bins == b].mean()) for b in np.unique(bins)]
        ax.plot(*zip(*mids), "-", color="tab:red", label="mean per frequency bin")
        ax.set_xscale("log")
        ax.set_xlabel("feature frequency (train rows)", fontsize=8)
        ax.set_title(label, fontsize=8)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("kept dimensions (of 64)")
    first.legend(fontsize=7, loc="upper left")
    fig.suptitle("MovieLens sample, MF, CR 10, seed 1: dimensions after pruning against frequency "
                 "(cf. paper Fig. 7b)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bench_figures(bench_name: str, args, grid, seeds, work: Path, figures: dict, rows: list) -> None:
    bench = BENCHES[bench_name]
    prepared = prepared_data(bench, args.data, work)
    splits = {"train": prepared.load_split("train"), "valid": prepared.load_split("valid"),
              "judge": prepared.load_split("test")}
    name = bench_name.split("-")[0]
    results: dict[str, dict] = {}
    adam = results["Adam, lr 0.01"] = summarise(
        f"{name}_adam", run_setting(bench_name, overrides("adam", ADAM_LR), seeds, prepared, args.data, splits,
                                    f"adam lr {ADAM_LR:g}"), figures)
    key = adam["key"]
    better = max if key == "auc" else min
    rows.append((bench_name, key, "adam", f"{ADAM_LR:g}", adam))
    full: dict[float, list[dict]] = {}  # SGD runs on the full train split, by lr
    for select in args.select.split(","):
        if select == "holdout":
            train, held = holdout(splits["train"])
            select_splits = {"train": train, "valid": splits["valid"], "judge": held}
        else:
            select_splits = splits
        score = {}
        for lr in grid:  # SGD's lr on the first seed, by validation or held-out train rows (never test)
            runs = run_setting(bench_name, overrides("sgd", lr), seeds[:1], prepared, args.data, select_splits,
                               f"sgd lr {lr:g} (choosing by {select})")
            r = runs[0]
            if select == "valid":
                full.setdefault(lr, runs)
            score[lr] = r["retrained"] if select == "valid" else r["metric"]
            figures[f"{name}_select_{select}_sgd_lr{lr:g}_seed{seeds[0]}_{key}"] = score[lr]
            figures[f"{name}_select_{select}_sgd_lr{lr:g}_seed{seeds[0]}_alpha_rank_corr"] = round(
                rank_corr(r["alpha_blocks"]), 4)
            figures[f"{name}_select_{select}_sgd_lr{lr:g}_seed{seeds[0]}_search_evaluations"] = \
                r["stages"]["search"][0]
        lr = better(grid, key=lambda g: score[g])
        done = full.setdefault(lr, [])
        done += run_setting(bench_name, overrides("sgd", lr), seeds[len(done):], prepared, args.data, splits,
                            f"sgd lr {lr:g}")
        sgd = summarise(f"{name}_sgd_{select}", done, figures)
        results.setdefault(f"SGD, lr {lr:g}", sgd)
        figures[f"{name}_sgd_{select}_lr_alpha"] = lr
        figures[f"{name}_sgd_{select}_to_adam_test_ratio"] = statistics.mean(sgd["test"]) / statistics.mean(
            adam["test"])
        gap = statistics.mean(sgd["test"]) - statistics.mean(adam["test"])
        noise = max(statistics.pstdev(sgd["test"]), statistics.pstdev(adam["test"]))
        figures[f"{name}_sgd_{select}_minus_adam_test"] = gap
        figures[f"{name}_sgd_{select}_minus_adam_in_std"] = gap / noise if noise else float("nan")
        rows.append((bench_name, key, f"sgd (lr by {select})", f"{lr:g}", sgd))
    if args.capped:
        capped = summarise(f"{name}_adam_cap{args.capped}", run_setting(
            bench_name, overrides("adam", ADAM_LR, args.capped), seeds, prepared, args.data, splits,
            f"adam lr {ADAM_LR:g}, search capped at {args.capped}"), figures)
        results[f"Adam, lr 0.01, search ≤ {args.capped} evaluations"] = capped
        rows.append((bench_name, key, f"adam, search ≤ {args.capped}", f"{ADAM_LR:g}", capped))
    figures[f"{name}_metric"] = key
    figure_dir = args.figures or (None if args.quick else FIGURES)
    if name == "movielens" and figure_dir:
        figure_dir.mkdir(parents=True, exist_ok=True)
        fig7a(figure_dir / "alpha_per_block_movielens.png", results)
        fig7b(figure_dir / "dims_vs_frequency_movielens.png", prepared.features.frequencies,
              {label: res["kept_seed1"] for label, res in results.items()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"1 seed, SGD lrs {QUICK_GRID}, no figures unless "
                                                             f"--figures")
    parser.add_argument("--benches", help=f"comma-separated subset of {','.join(BENCH_NAMES)}")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--select", help="how SGD's lr is chosen: valid, holdout or both (comma-separated; "
                                         "default both, --quick: valid)")
    parser.add_argument("--capped", type=int, default=0, help="also Adam with the search capped at N evaluations")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--figures", type=Path, help=f"folder for the MovieLens PNGs (full run: {FIGURES})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: 2 thrash on busy cores)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.select = args.select or ("valid" if args.quick else ",".join(SELECTIONS))
    if set(args.select.split(",")) - set(SELECTIONS):
        parser.error(f"--select: {args.select!r} (valid, holdout or both)")
    torch.set_num_threads(args.threads)
    seeds = SEEDS[:args.seeds or (1 if args.quick else len(SEEDS))]
    grid = QUICK_GRID if args.quick else SGD_GRID
    benches = args.benches.split(",") if args.benches else BENCH_NAMES
    figures: dict = {"seeds": len(seeds), "adam_lr_alpha": ADAM_LR, "sgd_grid": ",".join(f"{g:g}" for g in grid)}
    rows: list = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autosrh-alpha-opt-") as work:
        for bench_name in benches:
            bench_start = time.perf_counter()
            bench_figures(bench_name, args, grid, seeds, Path(work), figures, rows)
            figures[f"{bench_name.split('-')[0]}_seconds"] = time.perf_counter() - bench_start
            if args.json:  # after every bench, so that a long run leaves its figures so far
                args.json.write_text(json.dumps(figures, indent=1))
    figures["seconds"] = time.perf_counter() - start
    print("\n| data | metric (test) | optimiser | lr_alpha | test mean ± std | valid (retrained) | search evaluations "
          "| α most frequent block | α rarest block | rank corr (block, α) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bench_name, key, label, lr, res in rows:
        print(f"| {bench_name} | {key.upper()} | {label} | {lr} | {_ms(res['test'])} | "
              f"{statistics.mean(res['valid']):.4f} | {res['evaluations']:.0f} | {res['alpha'][0]:.3f} | "
              f"{res['alpha'][-1]:.3f} | {rank_corr(res['alpha']):+.2f} |")
    print(f"\nwall: {figures['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
