"""How a byte budget's model is chosen among its candidates, judged on rows the choice never saw.

A byte budget retrains several candidates (a precision each, as many entries as fit, and the tighter budgets'
models that fit) and keeps one by validation — on the quarter of the validation rows α's stream leaves out
(``prune.choice_fraction``: a few hundred rows on the real samples). Two rules, compared on the same candidates:

* ``lowest``: the lowest validation loss on the choice rows (the workflow's rule);
* ``margin``: the candidate with the most entries, unless another validates better on the choice rows by more than
  the standard error of the paired per-row loss difference (a smaller model must beat it clearly).

Each rule's choice is judged on the *other* validation rows (those α was fitted on: the same bias for every
candidate of a run, never the test split) — the figure an option's default is decided on — and its test metric is
printed beside, for information. Reads the runs ``quality.py --bytes --keep DIR`` left (prepared data, reports,
every candidate's artifact):

    python benchmarks/quality.py --bytes --keep runs/ --json quality-bytes.json
    python benchmarks/choice_rule.py --runs runs/ --json choice-rule.json
    python benchmarks/choice_rule.py --runs runs/ --quick     # the synthetic and MovieLens sets only
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autosrh_ray.artifact.format import load_model  # noqa: E402
from autosrh_ray.config import CONFIG_FILE, budget_choice_rows, load_config  # noqa: E402
from autosrh_ray.data.prepared import PreparedData  # noqa: E402
from autosrh_ray.data.split import in_alpha_slice  # noqa: E402

QUICK = ("synthetic", "movielens")  # prepared data's directories (the runs beside them: <name>-<model>-<seed>)
RULES = ("lowest", "margin")


def row_losses(path: Path, rows, task: str) -> np.ndarray:
    """Per-row log loss (classification) or squared error of the artifact at ``path`` on ``rows``."""
    model = load_model(path)
    with torch.no_grad():
        out = model(torch.from_numpy(rows.ids), torch.from_numpy(rows.values)).double().numpy()
    y = rows.labels.astype(np.float64)
    if task == "classification":
        p = np.clip(1 / (1 + np.exp(-out)), 1e-7, 1 - 1e-7)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return (out - y) ** 2


def choose(rule: str, candidates: list[dict], losses: dict[str, np.ndarray]) -> dict:
    """The candidate ``rule`` keeps (among those within the budget; all if none is)."""
    pool = [c for c in candidates if c["within_budget"]] or candidates
    if rule == "lowest":
        return min(pool, key=lambda c: losses[c["model"]].mean())
    largest = max(pool, key=lambda c: c["kept"])
    base = losses[largest["model"]]
    clearly = [largest]
    for c in pool:
        d = losses[c["model"]] - base
        se = d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else math.inf
        if d.mean() < -se:
            clearly.append(c)
    return min(clearly, key=lambda c: losses[c["model"]].mean())


def judge_run(run: Path, prepared: PreparedData) -> dict[str, list[dict]]:
    """Per rule, per byte budget of the run: the chosen candidate's loss on the other validation rows, its test
    metric, name and entries."""
    config = load_config(str(run / CONFIG_FILE))
    report = json.loads((run / "report.json").read_text())
    held = budget_choice_rows(config)
    valid = prepared.load_split("valid")
    inside = in_alpha_slice(valid.ids, *held) if held else np.ones(len(valid.labels), dtype=bool)
    choice_rows, other_rows = valid.rows(inside), valid.rows(~inside)
    key = "auc" if config.task == "classification" else "mse"
    out: dict[str, list[dict]] = {rule: [] for rule in RULES}
    for entry in report["models"]:
        candidates = entry.get("candidates")
        if not candidates or "bytes" not in entry["budget"]:
            continue
        on_choice = {c["model"]: row_losses(run / c["model"], choice_rows, config.task) for c in candidates}
        on_other = {c["model"]: row_losses(run / c["model"], other_rows, config.task) for c in candidates}
        for rule in RULES:
            c = choose(rule, candidates, on_choice)
            out[rule].append({"budget": entry["budget"], "name": c["name"], "kept": c["kept"],
                              "other_loss": float(on_other[c["model"]].mean()), "test": c["test"][key]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="what quality.py --bytes --keep left")
    parser.add_argument("--quick", action="store_true", help="the synthetic and MovieLens sets only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures: dict = {}
    sets = sorted(p.name for p in args.runs.iterdir() if any(args.runs.glob(f"{p.name}-*/report.json")))
    sets = [s for s in sets if not args.quick or s in QUICK]
    better_sets = 0
    for name in sets:
        runs = sorted(r for r in args.runs.glob(f"{name}-*") if (r / "report.json").exists())
        if not runs:
            continue
        prepared = PreparedData.load(args.runs / name)
        judged = [judge_run(r, prepared) for r in runs]
        print(f"\n### {name} ({len(runs)} seeds): loss on the validation rows the choice did not see (test)\n")
        print("| budget | rule | other-rows loss | test | chosen (per seed) |")
        print("|---|---|---|---|---|")
        budgets = [b["budget"] for b in judged[0]["lowest"]]
        per_rule = {}
        for i, budget in enumerate(budgets):
            for rule in RULES:
                picks = [j[rule][i] for j in judged]
                loss, test = (statistics.mean(p[k] for p in picks) for k in ("other_loss", "test"))
                per_rule.setdefault(rule, []).append(loss)
                figures[f"{name}_{budget}_{rule}_other_loss"] = loss
                figures[f"{name}_{budget}_{rule}_test"] = test
                chosen = "; ".join(p["name"].removeprefix(budget + "-") for p in picks)
                print(f"| {budget} | {rule} | {loss:.5f} | {test:.4f} | {chosen} |")
        ratio = statistics.mean(per_rule["margin"]) / statistics.mean(per_rule["lowest"])
        figures[f"{name}_margin_to_lowest_other_loss"] = ratio
        better_sets += ratio < 1
        print(f"\nmargin ÷ lowest, loss on the other rows (mean over budgets): {ratio:.4f}", flush=True)
    figures["sets"] = len(sets)
    figures["sets_where_margin_is_better"] = better_sets
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
