"""``autosrh-ray compare``: the paper's comparison (its Tables 3–4) on your own data.

Every method runs the same workflow — same prepared data (prepared once), splits, backbone, training loop, early
stopping and executor — differing only in how dimensions are chosen (``search.method``), once per seed
(``train.seed`` + 0, 1, …). Each run is an ordinary workflow output under ``DIR/<method>/seed<k>/`` (so a re-run
resumes: a finished run whose ``config.yaml`` matches is read back, an unfinished one resumes its finished
stages). Then::

    DIR/comparison.json   one entry per method × seed × budget (metrics, params, times), and per method × budget
                          the mean ± std over seeds
    DIR/comparison.md     the Table-3-style summary
    DIR/comparison.png    test quality against embedding bytes, one point per method and seed (grid: per K')

Compare at the achieved size: methods that cannot hit the budget exactly report ``cr_achieved``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from . import storage, workflow
from .atomic import atomic_path
from .config import Config, ConfigError, config_from_dict, with_overrides
from .engine.metrics import reported_metrics
from .logs import Log
from .methods.registry import BUILT_IN
from .report.schema import Report

COMPARISON_FILE = "comparison.json"


def parse_methods(text: str) -> list[str]:
    """``autosrh,uniform,…`` → the list, each checked (a one-line error names an unknown one)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        if m not in BUILT_IN and ":" not in m:
            raise ConfigError("--methods", f"unknown method {m!r} (choose from {', '.join(BUILT_IN)}, or your own as "
                                           f"package.module:NAME)")
    if not methods:
        raise ConfigError("--methods", "needs at least one method")
    return methods


def run_config(config: Config, method: str, seed: int) -> Config:
    """The workflow config of one method and seed: no UE reference (UE is a method here), no plots per run."""
    return with_overrides(config, {"search.method": method, "train.seed": config.train.seed + seed,
                                   "report.reference": "none", "report.plots": False})


def _finished(directory: Path, config: Config) -> Optional[Report]:
    """The report of a finished run of exactly ``config`` in ``directory``, else None."""
    report, saved = directory / "report.json", directory / "config.yaml"
    if not (report.is_file() and saved.is_file()):
        return None
    if config_from_dict(yaml.safe_load(saved.read_text())).to_dict() != config.to_dict():
        return None
    try:
        return Report.from_json(json.loads(report.read_text()))
    except (KeyError, TypeError):  # a report of an older version that lacks keys this one reads: run again
        return None


def _rows(method: str, seed: int, report: Report) -> list[dict]:
    """The comparison's rows of one run: one per final model, what the comparison keeps of its report entry."""
    out = []
    for entry in report.models:
        out.append({"method": method, "seed": seed, "budget": entry.budget, "test": entry.test,
                    "valid": entry.valid, "params": dataclasses.asdict(entry.params),
                    "bytes": dataclasses.asdict(entry.bytes), "precision": entry.precision,
                    "cr_target": entry.cr_target, "cr_achieved": entry.cr_achieved, "timings_s": entry.timings_s,
                    "total_s": report.top.timings_s["total"],
                    **({"candidates": entry.candidates} if entry.candidates is not None else {})})
    return out


def summarise(rows: Sequence[dict], task: str) -> list[dict]:
    """Mean ± std over seeds per method and budget (metrics, kept params, embedding bytes, stage times)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"]), []).append(r)
    out = []
    for (method, budget), group in groups.items():
        entry = {"method": method, "budget": budget, "seeds": len(group)}
        for name in reported_metrics(task):
            values = np.array([g["test"][name] for g in group])
            entry[f"test_{name}"] = {"mean": float(values.mean()), "std": float(values.std())}
        for key in ("kept", "projection"):
            entry[key] = float(np.mean([g["params"].get(key, 0) for g in group]))
        for key in ("embedding", "bytes_cr"):
            entry[f"bytes_{key}" if key == "embedding" else key] = float(np.mean([g["bytes"][key] for g in group]))
        entry["cr_achieved"] = float(np.mean([g["cr_achieved"] for g in group]))
        for stage in ("search", "retrain"):
            entry[f"{stage}_s"] = float(np.mean([g["timings_s"][stage] for g in group]))
        entry["total_s"] = float(np.mean([g["total_s"] for g in group]))
        out.append(entry)
    return out


def _mean_std(stat: dict, seeds: int) -> str:
    """``mean ± std`` over seeds; the mean alone for one seed (a spread of one number says nothing)."""
    return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if seeds > 1 else "")


def table(summary: Sequence[dict], task: str) -> str:
    """The Table-3-style Markdown summary."""
    names = reported_metrics(task)
    head = ["method", "budget", *[f"test {n}" for n in names], "kept params", "projection", "CR achieved",
            "embedding KiB", "bytes CR", "search s", "retrain s", "total s", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary:
        metrics = [_mean_std(e[f"test_{n}"], e["seeds"]) for n in names]
        cells = [e["method"], e["budget"], *metrics,
                 f"{e['kept']:,.0f}", f"{e['projection']:,.0f}", f"{e['cr_achieved']:.2f}",
                 f"{e['bytes_embedding'] / 1024:,.1f}", f"{e['bytes_cr']:.2f}", f"{e['search_s']:.1f}",
                 f"{e['retrain_s']:.1f}", f"{e['total_s']:.1f}", str(e["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_title(config: Config, seeds: int) -> str:
    """comparison.png's title: the data, backbone, budgets and seeds."""
    budgets = [f"CR {', '.join(f'{c:g}' for c in config.prune.crs)}"] if config.prune.crs else []
    budgets += [f"{p:,} params" for p in config.prune.param_budgets]
    return (f"{config.dataset.name}, {config.model.name}, K = {config.search.K}: {'; '.join(budgets)}, "
            f"{seeds} seed{'s' if seeds != 1 else ''}, test split")


def plot(rows: Sequence[dict], task: str, path: Path, title: Optional[str] = None) -> None:
    """Test quality against the artifact's embedding bytes (index, scales and projections included, every method
    counted alike): one point per method and seed (grid: one per K')."""
    from .report.plots import comparison_plot

    metric = reported_metrics(task)[0]
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        points = series.setdefault(r["method"], [])
        if r.get("candidates") and r["method"] == "grid":
            points += [(c["bytes"], c["test"][metric]) for c in r["candidates"] if "test" in c]
        else:
            points.append((r["bytes"]["embedding"], r["test"][metric]))
    better = "higher" if metric == "auc" else "lower"
    comparison_plot(series, f"test {metric} ({better} is better)", path, lines={"grid"}, title=title)


def compare(config: Config, methods: Sequence[str], seeds: int, output: str | Path, log: Log = print) -> dict:
    """Run every method × seed on the same prepared data; write and return the comparison."""
    if storage.is_uri(output):
        raise ConfigError("--output", "compare writes a local directory (copy it to a bucket afterwards)")
    output = Path(output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    prepared = workflow.prepare(config, output / "data", log)
    rows = []
    for method in methods:
        for seed in range(seeds):
            cfg = run_config(config, method, seed)
            directory = output / method / f"seed{seed}"
            report = _finished(directory, cfg)
            if report is not None:
                log(f"[compare] {method} seed {seed}: finished in an earlier run, read back from {directory}")
            else:
                log(f"[compare] {method} seed {seed} → {directory}")
                report = Report.from_json(workflow.run(cfg, directory, prepared=prepared, log=log))
            rows += _rows(method, seed, report)
    summary = summarise(rows, config.task)
    result = {"task": config.task, "dataset": config.dataset.name, "model": config.model.name, "K": config.search.K,
              "methods": list(methods), "seeds": seeds, "runs": rows, "summary": summary}
    with atomic_path(output / COMPARISON_FILE) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    with atomic_path(output / "comparison.md") as tmp:
        tmp.write_text(f"# Comparison: {config.dataset.name}, {config.model.name}, K = {config.search.K}, "
                       f"{seeds} seed(s), test split\n\n" + table(summary, config.task))
    plot(rows, config.task, output / "comparison.png", plot_title(config, seeds))
    log(table(summary, config.task))
    log(f"wrote {output / COMPARISON_FILE}, comparison.md and comparison.png")
    return result
