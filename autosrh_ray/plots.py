"""PNG plots written next to ``report.json`` (matplotlib, headless):

* ``alpha.png`` — α per frequency block (rows: blocks, most frequent first; columns: dimensions), the paper's
  Fig. 7a;
* ``kept_dims.png`` — kept dimensions per feature against its training frequency (Fig. 7b), with the mean per
  frequency bin;
* ``quality.png`` — the test metric against kept embedding parameters, one point per budget, UE as a line;
* ``study.png`` — the study's trials: score against L, one series per K (stopped trials marked);
* ``comparison.png`` (``autosrh-ray compare``) — test quality against kept params, one series per method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def alpha_heatmap(alpha: np.ndarray, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, alpha.shape[1] * 0.25 + 2), max(2.0, alpha.shape[0] * 0.35 + 1)))
    image = ax.imshow(alpha, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel("dimension k")
    ax.set_ylabel("frequency block (0 = most frequent)")
    ax.set_yticks(range(alpha.shape[0]))
    ax.set_title("soft selection α after the search")
    fig.colorbar(image, ax=ax, label="α")
    _save(fig, path)


def kept_dims_vs_frequency(frequencies: np.ndarray, kept: np.ndarray, path: Path, dim: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    freq = np.maximum(np.asarray(frequencies, dtype=np.float64), 1.0)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(freq), size=min(len(freq), 20_000), replace=False)
    ax.scatter(freq[sample], kept[sample] + rng.uniform(-0.2, 0.2, len(sample)), s=3, alpha=0.3,
               label="features (jittered)")
    edges = np.unique(np.geomspace(freq.min(), freq.max() + 1, num=20))
    which = np.clip(np.digitize(freq, edges) - 1, 0, len(edges) - 2)
    centres, means = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.any():
            centres.append(np.sqrt(edges[b] * edges[b + 1]))
            means.append(kept[sel].mean())
    ax.plot(centres, means, color="C3", marker="o", label="mean per frequency bin")
    ax.set_xscale("log")
    ax.set_ylim(-0.5, dim + 0.5)
    ax.set_xlabel("training frequency of the feature")
    ax.set_ylabel("kept dimensions")
    ax.set_title("mixed dimensions after pruning")
    ax.legend(loc="upper left")
    _save(fig, path)


def quality_vs_params(points: Sequence[tuple[str, int, float]], metric: str, path: Path,
                      reference: Optional[tuple[int, float]] = None) -> None:
    """``points``: (budget name, kept params, test metric); ``reference``: UE's (params, metric)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label="AutoSrh / pruned models")
    for name, params, value in points:
        ax.annotate(name, (params, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if reference is not None:
        ax.axhline(reference[1], color="C1", linestyle="--", label=f"UE ({reference[0]:,} params)")
    ax.set_xscale("log")
    ax.set_xlabel("kept embedding parameters")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} against size")
    ax.legend()
    _save(fig, path)


def study_trials(trials: Sequence[dict], metric: str, path: Path) -> None:
    """``trials``: dicts with ``L``, ``K``, ``score`` (None when stopped early) and ``last`` (last reported)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, k in enumerate(sorted({t["K"] for t in trials})):
        mine = [t for t in trials if t["K"] == k]
        done = [t for t in mine if t["score"] is not None]
        ax.scatter([t["L"] for t in done], [t["score"] for t in done], color=f"C{i}", label=f"K={k}")
        stopped = [t for t in mine if t["score"] is None and t.get("last") is not None]
        if stopped:
            ax.scatter([t["L"] for t in stopped], [t["last"] for t in stopped], color=f"C{i}", marker="x",
                       label=f"K={k}, stopped early (last reported)")
    ax.set_xlabel("blocks L")
    ax.set_ylabel(f"{metric} at the study budget")
    ax.set_title("study trials")
    ax.legend(fontsize=8)
    _save(fig, path)


def comparison_plot(series: dict[str, list[tuple[int, float]]], ylabel: str, path: Path,
                    lines: frozenset | set = frozenset()) -> None:
    """One marker per (kept params, quality) point, one colour per method; methods in ``lines`` joined."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (method, points) in enumerate(series.items()):
        x, y = zip(*sorted(set(points)))
        style = "osD^vPX*h"[i % 9] + ("--" if method in lines else "")
        ax.plot(x, y, style, color=f"C{i}", label=method, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("kept embedding params")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
