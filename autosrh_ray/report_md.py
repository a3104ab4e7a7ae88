"""``report.md``: what a user reads first — one table of every final model against the UE reference, the kept
dimensions per field, the study's trials — with the plots (:mod:`.plots`) written beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from . import atomic, plots
from .data.prepared import PreparedData
from .models import EmbeddingModel


def _metric(report: dict) -> tuple[str, bool]:
    """The headline test metric and whether higher is better."""
    return ("auc", True) if report["task"] == "classification" else ("mse", False)


def _delta(value: float, reference: Optional[float], higher: bool) -> str:
    if reference is None:
        return "–"
    if higher:
        return f"{value - reference:+.4f}"
    return f"{(value / reference - 1) * 100:+.2f}%"


def _bytes(entry: dict) -> str:
    return f"{entry['artifact_bytes']['compact_model'] / 1024:,.0f} KiB"


def model_table(report: dict) -> list[str]:
    key, higher = _metric(report)
    ref = report.get("reference")
    ref_value = ref["test"][key] if ref else None
    lines = [f"| method | budget | kept params | model file | test {key} | Δ vs UE |", "|---|---|---|---|---|---|"]
    rows = list(report["models"]) + ([ref] if ref else [])
    for e in rows:
        budget = "none (UE)" if e["budget"] == "uniform" else f"{e['budget']} (CR {e['cr_achieved']:.1f})"
        lines.append(f"| {e['method']} | {budget} | {e['params']['kept']:,} | {_bytes(e)} | {e['test'][key]:.4f} | "
                     f"{'reference' if e is ref else _delta(e['test'][key], ref_value, higher)} |")
    return lines


def field_table(prepared: PreparedData, model: EmbeddingModel) -> list[str]:
    """Kept dimensions per field: mean (weighted by feature), min, max, and the field's share of kept params."""
    kept = model.embedding.kept_per_feature().cpu().numpy()
    total = kept.sum()
    field_of = prepared.features.field_of
    lines = ["| field | features | mean kept dims | min | max | share of kept params |", "|---|---|---|---|---|---|"]
    for f, spec in enumerate(prepared.features.fields):
        k = kept[field_of == f]
        if len(k):
            lines.append(f"| {spec.name} | {len(k):,} | {k.mean():.2f} | {int(k.min())} | {int(k.max())} | "
                         f"{k.sum() / max(total, 1):.1%} |")
    return lines


def study_table(study) -> list[str]:
    lines = [f"| trial | {study.metric} at {study.budget:,} kept | search evaluations | stop | seconds |",
             "|---|---|---|---|---|"]
    for t in study.trials:
        score = f"{t.score:.5f}" if t.score is not None else f"– (last {t.last:.5f})" if t.last is not None else "–"
        best = " **best**" if t is study.best else ""
        lines.append(f"| {t.overrides}{best} | {score} | {t.epochs} | {t.stop_reason} | {t.seconds:.0f} |")
    return lines


def write_report_md(report: dict, prepared: PreparedData, model: EmbeddingModel, alpha: Optional[torch.Tensor],
                    output: Path, study=None) -> None:
    """Write the plots and ``report.md`` into ``output``."""
    key, _ = _metric(report)
    lines = [f"# {report['method']} on {report['dataset']} ({report['model']}, K={report['K']}, L={report['L']})",
             "", *model_table(report), ""]
    if report.get("valid_optimistic"):
        lines += ["Read quality from test: α was fitted on the validation split, so AutoSrh's validation metrics "
                  "are optimistic.", ""]
    points = [(e["budget"], e["params"]["kept"], e["test"][key]) for e in report["models"]]
    ref = report.get("reference")
    plots.quality_vs_params(points, key, output / "quality.png",
                            (ref["params"]["kept"], ref["test"][key]) if ref else None)
    lines += ["![test metric against kept parameters](quality.png)", "",
              f"## Kept dimensions per field ({report['budget']})", "", *field_table(prepared, model), ""]
    kept = model.embedding.kept_per_feature()
    plots.kept_dims_vs_frequency(prepared.features.frequencies, kept.cpu().numpy(), output / "kept_dims.png",
                                 model.embedding.dim)
    lines += ["![kept dimensions against feature frequency](kept_dims.png)", ""]
    if alpha is not None:
        plots.alpha_heatmap(alpha.cpu().numpy(), output / "alpha.png")
        lines += ["## Soft selection α per frequency block", "", "![α per block](alpha.png)", ""]
    if study is not None:
        base = study.best_config.search  # L and K of trials that do not sweep them
        trials = [{"L": t.overrides.get("search.L", base.L), "K": t.overrides.get("search.K", base.K),
                   "score": t.score, "last": t.last} for t in study.trials]
        plots.study_trials(trials, study.metric, output / "study.png")
        lines += ["## Study", "", f"Every trial pruned to {study.budget:,} kept entries and briefly retrained; "
                  "trials stopped by the scheduler show the last metric they reported (their soft model's during "
                  "the search), which is not comparable with the scores.", "", *study_table(study), "",
                  "![study trials](study.png)", ""]
    atomic.write_text(output / "report.md", "\n".join(lines))
