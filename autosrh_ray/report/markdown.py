"""``report.md``: what a user reads first — one table of every final model against the UE reference, the kept
dimensions per field (on the planted synthetic data: which fields carry signal), the study's trials — with the
plots (:mod:`.plots`) written beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import atomic
from ..config import load_config
from ..data.prepared import PreparedData
from ..data.synthetic import SyntheticGenerator
from ..engine.model import EmbeddingModel
from ..engine.precision_plan import precision_name
from . import plots
from .schema import ModelEntry, Report


def _metric(report: Report) -> tuple[str, bool]:
    """The headline test metric and whether higher is better."""
    return ("auc", True) if report.top.task == "classification" else ("mse", False)


def _delta(value: float, reference: Optional[float], higher: bool) -> str:
    if reference is None:
        return "–"
    if higher:
        return f"{value - reference:+.4f}"
    return f"{(value / reference - 1) * 100:+.2f}%"


def size(n: float) -> str:
    """Bytes as a person reads them: ``640 B``, ``15.6 KiB``, ``2.4 MiB``, ``1.2 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _bytes(entry: ModelEntry) -> str:
    return size(entry.artifact_bytes["compact_model"])


def _label(precision, int_scales: Optional[str] = None) -> str:
    """``int8``, ``int8x2-fp16x4``; ``int8 (dim scales)`` where the codes share a scale per block and dimension."""
    name = precision_name(precision if isinstance(precision, str) else tuple(precision))
    return f"{name} (dim scales)" if int_scales == "dim" else name


def _embedding_bytes(entry: ModelEntry) -> str:
    b = entry.bytes
    return f"{size(b.embedding)} {_label(entry.precision, entry.int_scales)} ({b.bytes_cr:.1f}×)"


def _budget(entry: ModelEntry) -> str:
    """The budget column: its name and what it asks (a byte budget: its limit in bytes), over it in bold."""
    if entry.budget == "uniform":
        return "none (UE)"
    asked = (f"≤ {size(entry.budget_bytes)}; CR {entry.cr_achieved:.1f}" if entry.budget_bytes is not None
             else f"CR {entry.cr_achieved:.1f}")
    over = "" if entry.within_budget else " **over its budget: nothing smaller fits**"
    return f"{entry.budget} ({asked}){over}"


def model_table(report: Report) -> list[str]:
    key, higher = _metric(report)
    ref = report.reference
    ref_value = ref.test[key] if ref else None
    lines = [f"| method | budget | kept params | embedding bytes (× fewer than UE's fp32 table) | model file | "
             f"test {key} | Δ vs UE |", "|---|---|---|---|---|---|---|"]
    rows = list(report.models) + ([ref] if ref else [])
    for e in rows:
        lines.append(f"| {e.method} | {_budget(e)} | {e.params.kept:,} | {_embedding_bytes(e)} | "
                     f"{_bytes(e)} | {e.test[key]:.4f} | "
                     f"{'reference' if e is ref else _delta(e.test[key], ref_value, higher)} |")
    return lines


def byte_budget_tables(report: Report) -> list[str]:
    """Per byte budget, every candidate that competed for it (a precision, and the tighter budgets' that fit):
    its bytes against the limit, validation (what chose) and test."""
    key, _ = _metric(report)
    valid_key = "logloss" if key == "auc" else key
    lines: list[str] = []
    for entry in report.models:
        if entry.budget_bytes is None or not entry.candidates or "valid" not in entry.candidates[0]:
            continue
        lines += [f"### {entry.budget}: at most {entry.budget_bytes:,} embedding bytes", "",
                  f"Chosen on {entry.chosen_on or 'the validation split'} by validation {valid_key}.", "",
                  f"| candidate | precision | kept params | embedding bytes | within | valid {valid_key} | test {key} "
                  f"| chosen |", "|---|---|---|---|---|---|---|---|"]
        for row in entry.candidates:
            lines.append(f"| {row['name']} | {_label(row['precision'], row.get('int_scales'))} | {row['kept']:,} | {size(row['bytes'])} | "
                         f"{'yes' if row['within_budget'] else '**no**'} | {row['valid'][valid_key]:.5f} | "
                         f"{row['test'][key]:.4f} | {'✓' if row['chosen'] else ''} |")
        lines.append("")
    if lines:
        lines = ["## Byte budgets", "", "Each budget's candidates: one per precision with as many entries as fit, "
                 "per-block plans (`mixed`, `mixed-int4`) unless they chose one precision for every block (then "
                 "they are that precision's candidate), and the tighter budgets' candidates that fit.", "", *lines]
    return lines


def planted_truth(output: Path, report: Report):
    """What the synthetic generator planted (:class:`~autosrh_ray.data.synthetic.SyntheticTruth`) when the run's data is the
    embedded synthetic dataset (its ``config.yaml`` beside the report says how it was generated), else None."""
    if report.top.dataset != "synthetic" or not (output / "config.yaml").is_file():
        return None

    return SyntheticGenerator(load_config(output / "config.yaml").dataset.synthetic).truth


def _planted(name: str, truth) -> str:
    if name in truth.signal_fields:
        return f"signal (top {truth.signal_values:,} values)"
    if name in truth.signal_numerical:
        return "signal (linear)"
    return "noise"


def field_table(prepared: PreparedData, model: EmbeddingModel, truth=None) -> list[str]:
    """Kept dimensions per field: mean (weighted by feature), min, max, and the field's share of kept params;
    with ``truth`` (planted synthetic data), whether the field carries signal."""
    kept = model.embedding.kept_per_feature().cpu().numpy()
    total = kept.sum()
    field_of = prepared.features.field_of
    head = "| field | features | mean kept dims | min | max | share of kept params |"
    lines = [head + (" planted |" if truth else ""), "|---|---|---|---|---|---|" + ("---|" if truth else "")]
    for f, spec in enumerate(prepared.features.fields):
        k = kept[field_of == f]
        if len(k):
            lines.append(f"| {spec.name} | {len(k):,} | {k.mean():.2f} | {int(k.min())} | {int(k.max())} | "
                         f"{k.sum() / max(total, 1):.1%} |" + (f" {_planted(spec.name, truth)} |" if truth else ""))
    return lines


def truth_note(truth) -> list[str]:
    """One paragraph on the planted truth (what a good search keeps more of)."""
    def names(fields) -> str:
        return ", ".join(fields) if fields else "none"

    return [f"Planted truth (synthetic data): the categorical fields {names(truth.signal_fields)} carry signal, "
            f"through their {truth.signal_values:,} most frequent values only (rarer values are noise); "
            f"{names(truth.noise_fields)} are pure noise. Numerical fields with a linear signal: "
            f"{names(truth.signal_numerical)}; noise: {names(truth.noise_numerical)}.", ""]


def _blocks(model: EmbeddingModel) -> Optional[np.ndarray]:
    """The embedding's block of every feature id when blocks are contiguous id ranges (frequency blocks)."""
    block_of = getattr(model.embedding, "block_of", None)
    if block_of is None:
        return None
    block_of = block_of.cpu().numpy().astype(np.int64)
    return block_of if len(block_of) and np.all(np.diff(block_of) >= 0) else None


def study_table(study) -> list[str]:
    lines = [f"| trial | {study.metric} at {study.budget:,} kept | search evaluations | stop | seconds |",
             "|---|---|---|---|---|"]
    for t in study.trials:
        score = f"{t.score:.5f}" if t.score is not None else f"– (last {t.last:.5f})" if t.last is not None else "–"
        best = " **best**" if t is study.best else ""
        lines.append(f"| {t.overrides}{best} | {score} | {t.epochs} | {t.stop_reason} | {t.seconds:.0f} |")
    return lines


def write_report_md(report: Report, prepared: PreparedData, model: EmbeddingModel, alpha: Optional[torch.Tensor],
                    output: Path, study=None) -> None:
    """Write the plots and ``report.md`` into ``output``."""
    key, higher = _metric(report)
    truth = planted_truth(output, report)
    top = report.top
    lines = [f"# {top.method} on {top.dataset} ({top.model}, K={top.K}, L={top.L})", "", *model_table(report), ""]
    if top.valid_optimistic:
        lines += ["Read quality from test: α was fitted on the validation split, so AutoSrh's validation metrics "
                  "are optimistic.", ""]
    points = [(e.budget, e.bytes.embedding, e.test[key]) for e in report.models]
    ref = report.reference
    plots.quality_vs_bytes(points, key, output / "quality.png", (ref.bytes.embedding, ref.test[key]) if ref else None,
                           higher)
    lines += [f"![test {key} against embedding bytes](quality.png)", "", *byte_budget_tables(report),
              f"## Kept dimensions per field ({top.budget})", "", *field_table(prepared, model, truth), ""]
    if truth is not None:
        lines += truth_note(truth)
    kept = model.embedding.kept_per_feature()
    blocks = _blocks(model)
    starts = None if blocks is None else np.flatnonzero(np.diff(blocks, prepend=-1))
    plots.kept_dims_vs_frequency(prepared.features.frequencies, kept.cpu().numpy(), output / "kept_dims.png",
                                 model.embedding.dim, top.budget, starts)
    lines += [f"![kept dimensions against feature frequency ({top.budget})](kept_dims.png)", ""]
    if alpha is not None:
        alpha = alpha.cpu().numpy()
        sizes = freqs = None
        if blocks is not None and blocks.max() + 1 == alpha.shape[0]:
            sizes = np.bincount(blocks, minlength=alpha.shape[0]).tolist()
            f = np.asarray(prepared.features.frequencies)
            freqs = [(int(f[blocks == b].max()), int(f[blocks == b].min())) for b in range(alpha.shape[0])]
        plots.alpha_heatmap(alpha, output / "alpha.png", sizes, freqs)
        lines += ["## Soft selection α per frequency block", "", "![α per block](alpha.png)", ""]
    if study is not None:
        base = study.best_config.search  # L and K of trials that do not sweep them
        trials = [{"L": t.overrides.get("search.L", base.L), "K": t.overrides.get("search.K", base.K),
                   "score": t.score, "last": t.last, "best": t is study.best} for t in study.trials]
        plots.study_trials(trials, study.metric, output / "study.png", study.mode == "max", study.budget)
        lines += ["## Study", "", f"Every trial pruned to {study.budget:,} kept entries and briefly retrained; "
                  f"its score is its best {study.metric} there ({'higher' if study.mode == 'max' else 'lower'} is "
                  "better). Trials stopped by the scheduler show the last metric they reported (their soft model's "
                  "during the search), which is not comparable with the scores (plotted apart).", "",
                  *study_table(study), "", "![study trials](study.png)", ""]
    atomic.write_text(output / "report.md", "\n".join(lines))
