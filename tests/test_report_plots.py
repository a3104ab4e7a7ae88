"""What the plots say (checked on the matplotlib figures before they are saved): quality.png names the test split
and the better direction, keeps every budget's label inside the axes and draws no line through a single point;
kept_dims.png names its budget and marks the frequency blocks' boundaries; alpha.png gives each block's size;
study.png keeps scheduler-stopped trials out of the scores' axis and marks the best trial; comparison.png has a
title with the data, budgets and seeds. report.md on the planted synthetic data says which fields carry signal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autosrh_ray.report import plots

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save (drawn, not written)."""
    caught = []

    def keep(fig, path):
        fig.canvas.draw()
        caught.append(fig)

    monkeypatch.setattr(plots, "_save", keep)
    yield caught
    plots._pyplot().close("all")


def _inside(fig, artist, ax) -> bool:
    renderer = fig.canvas.get_renderer()
    box, frame = artist.get_window_extent(renderer), ax.get_window_extent(renderer)
    return frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1


def test_quality_names_the_test_split_and_keeps_labels_inside(figures, tmp_path):
    points = [("cr20", 7_000, 0.678), ("cr5", 31_000, 0.674), ("cr10", 15_000, 0.676)]
    plots.quality_vs_bytes(points, "auc", tmp_path / "q.png", (155_000, 0.666), higher=True)
    fig = figures[-1]
    ax = fig.axes[0]
    assert "test" in ax.get_ylabel() and "higher is better" in ax.get_ylabel() and "test" in ax.get_title()
    labels = [t for t in ax.texts if t.get_text().startswith("cr")]
    assert sorted(t.get_text() for t in labels) == ["cr10", "cr20", "cr5"]
    assert all(_inside(fig, t, ax) for t in labels), [t.get_text() for t in labels if not _inside(fig, t, ax)]
    assert ax.lines[0].get_linestyle() == "-"  # several budgets: joined
    plots.quality_vs_bytes([("cr10", 15_000, 0.676)], "mse", tmp_path / "q1.png", higher=False)
    one = figures[-1].axes[0]
    assert one.lines[0].get_linestyle() == "None" and "lower is better" in one.get_ylabel()


def test_kept_dims_names_the_budget_and_marks_block_boundaries(figures, tmp_path):
    freq = np.sort(np.random.default_rng(0).zipf(1.3, 3000))[::-1]
    kept = np.random.default_rng(1).integers(0, 9, 3000)
    starts = [0, 500, 1000, 2000]
    plots.kept_dims_vs_frequency(freq, kept, tmp_path / "k.png", 8, "cr10", starts)
    ax = figures[-1].axes[0]
    assert "cr10" in ax.get_title()
    boundaries = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(boundaries) == 3  # one between each pair of blocks
    for line, start in zip(boundaries, starts[1:]):
        x = line.get_xdata()[0]
        assert freq[start] <= x <= freq[start - 1]  # between the block's first feature and the one before


def test_kept_dims_labels_every_block_even_a_narrow_one(figures, tmp_path):
    freq = np.sort(np.random.default_rng(0).zipf(1.3, 3000))[::-1].astype(np.float64)
    freq[:400] = np.geomspace(5e5, 2e3, 400)  # a few very frequent features, then the tail
    kept = np.random.default_rng(1).integers(0, 9, 3000)
    starts = [0, 200, 201, 202, 1000, 2000]  # blocks 1 and 2 are one feature wide: their numbers nearly coincide
    plots.kept_dims_vs_frequency(freq, kept, tmp_path / "k.png", 8, "cr10", starts)
    fig = figures[-1]
    ax = fig.axes[0]
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert sorted(int(t.get_text()) for t in numbers) == list(range(len(starts)))
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in numbers]
    overlapping = [(numbers[i].get_text(), numbers[j].get_text()) for i in range(len(boxes))
                   for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlapping


def test_alpha_gives_every_blocks_size(figures, tmp_path):
    plots.alpha_heatmap(np.random.default_rng(0).random((3, 8)), tmp_path / "a.png", [10, 20, 30],
                        [(900, 50), (49, 5), (4, 0)])
    ticks = [t.get_text() for t in figures[-1].axes[0].get_yticklabels()]
    assert [t.split(":")[0] for t in ticks] == ["0", "1", "2"]
    assert "10 features" in ticks[0] and "30 features" in ticks[2] and "50–900" in ticks[0]


def test_study_keeps_stopped_trials_apart_and_marks_the_best(figures, tmp_path):
    trials = [{"L": 2, "K": 8, "score": 0.52, "last": 0.52, "best": False},
              {"L": 4, "K": 8, "score": 0.515, "last": 0.51, "best": True},
              {"L": 6, "K": 8, "score": None, "last": 0.47},
              {"L": 4, "K": 16, "score": None, "last": 0.49}]
    plots.study_trials(trials, "valid_logloss", tmp_path / "s.png", higher=False, budget=1000)
    scores_ax, stopped_ax = figures[-1].axes[:2]
    plotted = np.concatenate([c.get_offsets()[:, 1] for c in scores_ax.collections])
    assert set(np.round(plotted, 6)) == {0.52, 0.515}  # only finished trials' scores, the best ringed again
    assert "lower is better" in scores_ax.get_ylabel()
    assert any("best" in t and "L=4" in t for t in scores_ax.get_legend_handles_labels()[1])
    faded = np.concatenate([c.get_offsets()[:, 1] for c in stopped_ax.collections])
    assert sorted(faded) == [0.47, 0.49] and all(c.get_alpha() < 1 for c in stopped_ax.collections)
    assert "not comparable" in stopped_ax.get_title()
    for ax in (scores_ax, stopped_ax):  # the values as they are: no offset ("1e-5+4.594e-1") on either axis
        assert ax.yaxis.get_major_formatter().get_offset() == ""
    close = [{**t, "score": 0.459412 + 1e-6 * i, "last": 0.459412 + 1e-6 * i} for i, t in enumerate(trials)]
    plots.study_trials(close, "valid_logloss", tmp_path / "s2.png", higher=False)
    for ax in figures[-1].axes[:2]:
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert ax.yaxis.get_major_formatter().get_offset() == "" and all(x.startswith("0.459") for x in labels)
    plots.study_trials([t for t in trials if t["score"] is not None], "valid_auc", tmp_path / "s1.png", True)
    assert len(figures[-1].axes) == 1 and "higher is better" in figures[-1].axes[0].get_ylabel()


def test_comparison_has_a_title_with_data_budgets_and_seeds(figures, tmp_path):
    from autosrh_ray.compare import plot, plot_title
    from autosrh_ray.config import load_config

    config = load_config(ROOT / "workflows" / "quickstart.yaml", ["prune.cr=[5, 10]"])
    rows = [{"method": "autosrh", "bytes": {"embedding": 6000}, "test": {"auc": 0.74}},
            {"method": "uniform", "bytes": {"embedding": 41000}, "test": {"auc": 0.72}}]
    plot(rows, "classification", tmp_path / "c.png", plot_title(config, 1))
    ax = figures[-1].axes[0]
    assert "synthetic" in ax.get_title() and "CR 5, 10" in ax.get_title() and "1 seed," in ax.get_title()
    assert "bytes" in ax.get_xlabel() and [tuple(line.get_xdata()) for line in ax.lines] == [(6000,), (41000,)]


def test_report_md_on_planted_synthetic_data_says_which_fields_carry_signal(ray_cluster, tmp_path):
    from autosrh_ray import workflow
    from autosrh_ray.config import load_config

    config = load_config(ROOT / "workflows" / "quickstart.yaml", [
        "dataset.synthetic.rows=4000", "dataset.synthetic.categorical_fields=4", "dataset.synthetic.signal_fields=1",
        "dataset.synthetic.numerical_fields=2", "search.K=4", "search.L=3", "search.max_epochs=2",
        "train.max_epochs=2", "train.batch_size=512", "report.reference=none", "ray.num_workers=0"])
    workflow.run(config, tmp_path / "run", log=lambda _: None)
    text = (tmp_path / "run" / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in text.splitlines()
            if line.startswith("| C") or line.startswith("| I")}
    # one signal field of four (C1), the first half of the numerical fields (I1)
    assert rows["C1"].startswith("signal") and {rows[c] for c in ("C2", "C3", "C4")} == {"noise"}
    assert rows["I1"].startswith("signal") and rows["I2"] == "noise"
    assert "Planted truth" in text
    for name in ("quality.png", "kept_dims.png", "alpha.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000
