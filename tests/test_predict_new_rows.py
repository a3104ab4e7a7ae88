"""``autosrh-ray predict`` on new rows: a run on the embedded synthetic dataset scores the Criteo dac rows
``autosrh-ray generate`` writes; rows without the label column (dac by column count, tabular by a missing label
column, CSV and Parquet) score as the same rows with it, and the output has no label; categorical values the
vocabulary does not hold and numerical values far outside the training range are counted per field (log lines and
the Parquet output's metadata), checked against counts made here from the raw rows and the run's vocabulary."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from autosrh_ray import workflow
from autosrh_ray.config import load_config
from autosrh_ray.data.generate import criteo_shape, write_criteo_shards
from autosrh_ray.data.prepared import PreparedData
from autosrh_ray.predict import FAR_RANGE, METADATA_KEY, predict

ROOT = Path(__file__).resolve().parents[1]
TINY = ["search.max_epochs=2", "train.max_epochs=2", "search.K=4", "search.L=2", "train.batch_size=512",
        "report.reference=none", "report.plots=false", "ray.num_workers=0"]
ROWS = 3000


@pytest.fixture(scope="module")
def synthetic(ray_cluster, tmp_path_factory):
    """A small quickstart run, and rows for it from ``generate`` (its dac files, as the CLI writes them)."""
    base = tmp_path_factory.mktemp("predict-synthetic")
    config = load_config(ROOT / "workflows" / "quickstart.yaml", ["dataset.synthetic.rows=8000", *TINY])
    workflow.run(config, base / "run", log=lambda _: None)
    write_criteo_shards(criteo_shape(config.dataset.synthetic), base / "new", ROWS, 1)
    lines = (base / "new" / "part-00000.txt").read_text().splitlines()
    return base, config, [line.split("\t") for line in lines]


def _write(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return path


def _metadata(path: Path) -> dict:
    return json.loads(pq.read_metadata(path).metadata[METADATA_KEY.encode()])


def test_generated_rows_score_with_the_synthetic_runs_model_through_the_cli(synthetic):
    base, _, rows = synthetic
    done = subprocess.run([sys.executable, "-m", "autosrh_ray", "predict", "--model", str(base / "run"), "--input",
                           str(base / "new"), "--output", str(base / "scores.parquet")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"scored {ROWS:,} of {ROWS:,} rows (skipped 0)" in done.stdout
    scores = pq.read_table(base / "scores.parquet")
    assert scores.column_names == ["position", "label", "score"]
    assert scores.column("position").to_pylist() == list(range(ROWS))
    assert scores.column("label").to_pylist() == [float(r[0]) for r in rows]
    p = scores.column("score").to_numpy()
    assert np.all((p > 0) & (p < 1)) and np.std(p) > 0


def test_rows_without_the_label_score_as_the_same_rows_with_it(synthetic, tmp_path):
    base, _, rows = synthetic
    labelled = predict(base / "run", str(_write(tmp_path / "with.txt", rows)), tmp_path / "with.parquet",
                       log=lambda _: None)
    lines = []
    unlabelled = predict(base / "run", str(_write(tmp_path / "without.txt", [r[1:] for r in rows])),
                         tmp_path / "without.parquet", log=lines.append)
    assert labelled.labelled and not unlabelled.labelled and unlabelled.scored == ROWS
    a, b = pq.read_table(tmp_path / "with.parquet"), pq.read_table(tmp_path / "without.parquet")
    assert b.column_names == ["position", "score"]
    assert b.column("position").equals(a.column("position")) and b.column("score").equals(a.column("score"))
    assert _metadata(tmp_path / "without.parquet")["labelled"] is False
    assert any("no label" in line for line in lines)
    csv_out = predict(base / "run", str(tmp_path / "without.txt"), tmp_path / "without.csv", log=lambda _: None)
    assert csv_out.scored == ROWS and pacsv.read_csv(tmp_path / "without.csv").column_names == ["position", "score"]


def test_a_bad_row_without_a_label_names_the_inputs_column_count(synthetic, tmp_path):
    base, _, rows = synthetic
    path = _write(tmp_path / "bad.txt", [r[1:] for r in rows[:5]] + [["1", "2", "3"]])
    from autosrh_ray.data.errors import DataError

    with pytest.raises(DataError, match=r"bad\.txt:6: .*expected 39 columns, got 3"):
        predict(base / "run", str(path), tmp_path / "bad.parquet", log=lambda _: None)


def test_unseen_categorical_values_are_counted_per_field(synthetic, tmp_path):
    base, config, rows = synthetic
    rows = [list(r) for r in rows]
    for i in range(0, 40):  # C2 (column 15) gets 40 values never seen; C5 (column 18) the same 7 times
        rows[i][15] = f"never-seen-{i}"
    for i in range(100, 107):
        rows[i][18] = "never-seen"
    lines = []
    summary = predict(base / "run", str(_write(tmp_path / "unseen.txt", rows)), tmp_path / "unseen.parquet",
                      log=lines.append)
    space = PreparedData.load(base / "run" / "data").features
    expected = {}
    for f, spec in enumerate(space.fields):  # counted here from the raw rows and the run's vocabulary
        if spec.kind == "categorical":
            column = 13 + int(spec.name[1:])  # C1 is the 15th dac column
            kept = set(space.vocabs[f].values)
            n = sum(r[column] not in kept for r in rows)
            if n:
                expected[spec.name] = n
    assert summary.oov_by_field == expected
    assert expected["C2"] >= 40 and expected["C5"] >= 7
    assert _metadata(tmp_path / "unseen.parquet")["oov_by_field"] == expected
    line = next(line for line in lines if line.startswith("out-of-vocabulary values"))
    assert f"C2 {expected['C2']:,} (" in line


def test_numerical_values_far_outside_the_training_range_are_a_warning(synthetic, tmp_path):
    base, config, rows = synthetic
    space = PreparedData.load(base / "run" / "data").features
    stats = {spec.name: space.numeric_stats[f] for f, spec in enumerate(space.fields) if spec.kind == "numerical"}
    from autosrh_ray.data.split import SPLIT_NAMES, split_of
    from autosrh_ray.data.synthetic import SyntheticGenerator

    table = SyntheticGenerator(config.dataset.synthetic).table()  # prepare records the training split's range
    train = split_of(np.arange(table.num_rows), config.dataset.seed, config.dataset.split) == SPLIT_NAMES.index("train")
    for name, s in stats.items():
        x = table.column(name).to_numpy(zero_copy_only=False)[train]
        assert (s.low, s.high) == (np.nanmin(x), np.nanmax(x)), name
    i1 = stats["I1"]
    width = FAR_RANGE * (i1.high - i1.low)
    rows = [list(r) for r in rows]
    for i in range(5):
        rows[i][1] = str(int(i1.high + width) + 1 + i)  # just past the margin: far out
    rows[5][1] = str(int(i1.high + width))  # at the margin: not
    rows[6][1] = str(int(i1.high) + 1)  # beyond the training max, within the margin: not
    lines = []
    summary = predict(base / "run", str(_write(tmp_path / "far.txt", rows)), tmp_path / "far.csv", log=lines.append)
    expected = {}
    for name, s in stats.items():
        column = int(name[1:])
        w = FAR_RANGE * (s.high - s.low)
        n = sum(r[column] != "" and not (s.low - w <= float(r[column]) <= s.high + w) for r in rows)
        if n:
            expected[name] = n
    assert summary.out_of_range_by_field == expected and expected["I1"] >= 5
    warning = [line for line in lines if line.startswith("warning: numerical values far outside")]
    assert len(warning) == 1 and f"I1 {expected['I1']:,} (" in warning[0]


def _table_rows(n: int = 4000) -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        user, category = int(rng.zipf(1.4) % 200), int(rng.integers(0, 8))
        out.append({"user_id": f"u{user}", "category": f"c{category}", "price": round(float(rng.gamma(2.0, 10.0)), 2),
                    "clicked": int(rng.random() < 0.1 + 0.5 * (user % 3 == 0) * (category < 3))})
    return out


def test_tabular_rows_without_the_label_column_csv_and_parquet(ray_cluster, tmp_path):
    rows = _table_rows()
    with (tmp_path / "train.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    config = load_config(ROOT / "workflows" / "tabular-example.yaml", [
        f"dataset.path={tmp_path / 'train.csv'}", "dataset.categorical=[user_id, category]",
        "dataset.numerical=[price]",
        "model.hidden=[8]", *TINY])
    workflow.run(config, tmp_path / "run", log=lambda _: None)
    new = rows[:300]
    with (tmp_path / "new.csv").open("w", newline="") as fh:  # the label column is not the first: any place works
        w = csv.DictWriter(fh, fieldnames=["category", "price", "user_id"], extrasaction="ignore")
        w.writeheader()
        w.writerows(new)
    with (tmp_path / "labelled.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(new)
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("user_id", "category", "price")} for r in new]),
                   tmp_path / "new.parquet")
    reference = predict(tmp_path / "run", str(tmp_path / "labelled.csv"), tmp_path / "ref.parquet", log=lambda _: None)
    assert reference.labelled
    want = pq.read_table(tmp_path / "ref.parquet")
    for name in ("new.csv", "new.parquet"):
        out = tmp_path / f"scores-{name}.parquet"
        summary = predict(tmp_path / "run", str(tmp_path / name), out, log=lambda _: None)
        got = pq.read_table(out)
        assert not summary.labelled and summary.scored == len(new) and got.column_names == ["position", "score"]
        assert np.allclose(got.column("score").to_numpy(), want.column("score").to_numpy(), rtol=1e-6, atol=0), name


def test_new_rows_come_from_the_distribution_the_run_learned_and_were_never_read(synthetic, tmp_path):
    """``generate --new-rows`` (the README's scoring demo): the run's own fields and the generator's rows after the
    dataset's — the positives' share and the scored AUC match the run's own, values out of vocabulary are only the
    rare tail's, and the rows are the generator's rows after the dataset's (the dataset is its first
    ``dataset.synthetic.rows``: none of these was read by the run)."""
    from autosrh_ray.data.synthetic import SyntheticGenerator
    from autosrh_ray.engine.metrics import auc

    base, config, _ = synthetic
    rows = 20_000
    workflow_file = tmp_path / "run.yaml"
    workflow_file.write_text((base / "run" / "config.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "autosrh_ray", "generate", str(workflow_file), "--rows", str(rows),
                           "--new-rows", "--output", str(tmp_path / "new")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = predict(base / "run", str(tmp_path / "new"), tmp_path / "scores.parquet", log=lambda _: None)
    assert summary.scored == rows and set(summary.oov_by_field) == {f"C{i}" for i in range(1, 11)}
    assert max(summary.oov_by_field.values()) < 0.1 * rows  # (other seeds' tokens: every value out of vocabulary)
    scores = pq.read_table(tmp_path / "scores.parquet")
    y, p = scores.column("label").to_numpy(), scores.column("score").to_numpy()
    report = json.loads((base / "run" / "report.json").read_text())
    train = PreparedData.load(base / "run" / report["artifacts"]["prepared"]).load_split("train")
    assert abs(y.mean() - train.labels.mean()) < 0.02  # ~3 standard errors at these sizes
    assert abs(auc(y, p) - report["test"]["auc"]) < 0.04
    start = config.dataset.synthetic.rows
    expected = SyntheticGenerator(config.dataset.synthetic).table(start, start + 50)
    written = [line.split("\t") for line in (tmp_path / "new" / "part-00000.txt").read_text().splitlines()[:50]]
    assert [int(r[0]) for r in written] == expected.column("label").to_pylist()
    assert [r[14] for r in written] == expected.column("C1").to_pylist()  # label, I1..I13, then C1
