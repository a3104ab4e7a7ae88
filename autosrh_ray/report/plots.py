"""PNG plots written next to ``report.json`` (matplotlib, headless):

* ``alpha.png`` — α per frequency block (rows: blocks, most frequent first, each labelled with its feature count
  and frequency range; columns: dimensions), the paper's Fig. 7a;
* ``kept_dims.png`` — kept dimensions per feature against its training frequency (Fig. 7b) at the report's first
  budget, with the mean per frequency bin and the frequency blocks' boundaries;
* ``quality.png`` — the test split's metric against the artifact's embedding bytes, one point per budget, UE as a line;
* ``study.png`` — the study's finished trials: score at the study budget against L, one series per K, the best
  marked; trials the scheduler stopped in a panel of their own (their last number is the soft model's, not a
  score);
* ``comparison.png`` (``autosrh-ray compare``) — test quality against embedding bytes, one series per method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _better(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


def alpha_heatmap(alpha: np.ndarray, path: Path, block_sizes: Optional[Sequence[int]] = None,
                  block_frequencies: Optional[Sequence[tuple[int, int]]] = None) -> None:
    """``block_sizes``: features per block; ``block_frequencies``: (highest, lowest) training frequency in each."""
    plt = _pyplot()
    labelled = block_sizes is not None
    fig, ax = plt.subplots(figsize=(max(4.0, alpha.shape[1] * 0.25 + 2) + (2.0 if labelled else 0.0),
                                    max(2.0, alpha.shape[0] * 0.35 + 1)))
    image = ax.imshow(alpha, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel("dimension k")
    ax.set_ylabel("frequency block (0 = most frequent)")
    ax.set_yticks(range(alpha.shape[0]))
    if labelled:
        names = []
        for b, n in enumerate(block_sizes):
            freq = ""
            if block_frequencies is not None:
                hi, lo = block_frequencies[b]
                freq = f", freq {hi:,}" if hi == lo else f", freq {lo:,}–{hi:,}"
            names.append(f"{b}: {n:,} features{freq}")
        ax.set_yticklabels(names, fontsize=8)
    ax.set_title("soft selection α after the search")
    fig.colorbar(image, ax=ax, label="α")
    _save(fig, path)


def kept_dims_vs_frequency(frequencies: np.ndarray, kept: np.ndarray, path: Path, dim: int,
                           budget: Optional[str] = None, block_starts: Optional[Sequence[int]] = None) -> None:
    """``frequencies``/``kept`` by feature id (ids in descending frequency); ``block_starts``: the first id of each
    frequency block (its boundaries are drawn); ``budget``: the model's budget, for the title."""
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
    starts = [int(s) for s in (block_starts if block_starts is not None else []) if 0 < int(s) < len(freq)]
    cuts = [np.sqrt(freq[s - 1] * freq[s]) for s in starts]  # between a block's first feature and the one before
    for i, at in enumerate(cuts):
        ax.axvline(at, color="0.4", linestyle=":", linewidth=1, label="frequency block boundary" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_ylim(-0.5, dim + 1.5)
    if cuts:  # block numbers at the top, 0 = most frequent; a narrow block's number a row lower than its neighbour's
        for b, (mid, row) in enumerate(block_label_places(freq.max(), cuts, freq.min())):
            ax.text(10 ** mid, dim + 0.9 - 0.5 * row, str(b), ha="center", va="center", fontsize=7, color="0.3")
    ax.set_xlabel("training frequency of the feature (top: frequency block)")
    ax.set_ylabel(f"kept dimensions (of K = {dim})")
    ax.set_title("mixed dimensions after pruning" + (f" ({budget})" if budget else ""))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    _save(fig, path)


def quality_vs_bytes(points: Sequence[tuple[str, int, float]], metric: str, path: Path,
                      reference: Optional[tuple[int, float]] = None, higher: Optional[bool] = None) -> None:
    """``points``: (budget name, embedding bytes, test metric); ``reference``: UE's (bytes, metric); ``higher``:
    whether a higher metric is better (said on the axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = sorted(points, key=lambda p: p[1])
    ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", linestyle="-" if len(points) > 1 else "none",
            label="pruned models (one per budget)")
    for i, (name, params, value) in enumerate(points):
        last = i == len(points) - 1 and len(points) > 1  # the rightmost label goes left, inside the axes
        ax.annotate(name, (params, value), textcoords="offset points", xytext=(-4 if last else 4, 4),
                    ha="right" if last else "left", fontsize=8)
    if reference is not None:
        ax.axhline(reference[1], color="C1", linestyle="--",
                   label=f"UE, uncompressed ({reference[0] / 1024:,.0f} KiB)")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("embedding bytes in the artifact (index included)")
    ax.set_ylabel(f"test {metric}" + (f" ({_better(higher)})" if higher is not None else ""))
    ax.set_title(f"{metric} on the test split against size")
    ax.legend(fontsize=8)
    _save(fig, path)


def block_label_places(top: float, cuts: Sequence[float], bottom: float, gap: float = 0.2) -> list[tuple[float, int]]:
    """Where each frequency block's number goes on kept_dims.png: (log10 frequency of its middle, row 0 or 1).
    Blocks are ordered most frequent first between ``top``, the ``cuts`` and ``bottom``; a number closer than
    ``gap`` decades to the last one of its row goes to the other row, so every block is labelled."""
    edges = np.log10([top * 1.5, *cuts, max(bottom / 1.5, 0.5)])
    last: list[Optional[float]] = [None, None]
    out = []
    for b in range(len(edges) - 1):
        mid = (edges[b] + edges[b + 1]) / 2
        room = [float("inf") if x is None else x - mid for x in last]
        row = 0 if room[0] > gap else int(room[1] > room[0])
        last[row] = mid
        out.append((float(mid), row))
    return out


def study_trials(trials: Sequence[dict], metric: str, path: Path, higher: bool = False,
                 budget: Optional[int] = None) -> None:
    """``trials``: dicts with ``L``, ``K``, ``score`` (None when stopped early), ``last`` (last reported) and
    ``best`` (the chosen trial). Finished trials' scores (comparable: the same budget and stopping rule) on the
    left, the best marked; trials the scheduler stopped on the right, faded: their last number is the soft
    model's during the search, not a score."""
    plt = _pyplot()
    stopped = [t for t in trials if t["score"] is None and t.get("last") is not None]
    fig, axes = plt.subplots(1, 2 if stopped else 1, figsize=(10 if stopped else 6, 4), squeeze=False,
                             layout="constrained")
    ax = axes[0][0]
    ks = sorted({t["K"] for t in trials})
    ls = sorted({t["L"] for t in trials})
    for i, k in enumerate(ks):
        done = [t for t in trials if t["K"] == k and t["score"] is not None]
        if done:
            ax.scatter([t["L"] for t in done], [t["score"] for t in done], color=f"C{i}", label=f"K={k}")
    best = [t for t in trials if t.get("best") and t["score"] is not None]
    if best:
        b = best[0]
        ax.scatter([b["L"]], [b["score"]], s=220, facecolors="none", edgecolors="C3", linewidths=2,
                   label=f"best: L={b['L']}, K={b['K']} (finishes the run)")
    at = f" at {budget:,} kept entries" if budget else " at the study budget"
    ax.set_ylabel(f"{metric}{at}\n({_better(higher)})")
    ax.set_title("finished trials: their scores", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if stopped:
        right = axes[0][1]
        for i, k in enumerate(ks):
            mine = [t for t in stopped if t["K"] == k]
            if mine:
                right.scatter([t["L"] for t in mine], [t["last"] for t in mine], color=f"C{i}", marker="x",
                              alpha=0.45, label=f"K={k}")
        right.set_ylabel(f"{metric}, last reported (soft model)")
        right.set_title("stopped by the scheduler: not comparable with the scores", fontsize=10, color="0.35")
        right.legend(fontsize=8)
    for a in axes[0]:
        a.ticklabel_format(axis="y", style="plain", useOffset=False)  # values as they are, never "1e-5+4.59e-1"
        a.set_xticks(ls)
        a.set_xlim(min(ls) - 0.6, max(ls) + 0.6)
        a.margins(y=0.2)
        a.set_xlabel("blocks L")
    _save(fig, path)


def comparison_plot(series: dict[str, list[tuple[int, float]]], ylabel: str, path: Path,
                    lines: frozenset | set = frozenset(), title: Optional[str] = None) -> None:
    """One marker per (embedding bytes, quality) point, one colour per method; methods in ``lines`` joined."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (method, points) in enumerate(series.items()):
        x, y = zip(*sorted(set(points)))
        style = "osD^vPX*h"[i % 9] + ("--" if method in lines else "")
        ax.plot(x, y, style, color=f"C{i}", label=method, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("embedding bytes in the artifact (index included)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
