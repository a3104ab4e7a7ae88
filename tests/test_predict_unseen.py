"""``predict`` scores a categorical value its run never saw with its field's out-of-vocabulary row: the scores of
raw rows with unseen values equal the model's scores with each field's OOV id (from the run's vocabulary) in
their place (a small CSV table, trained in process)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from autosrh_ray import workflow
from autosrh_ray.artifact.format import load_model
from autosrh_ray.config import load_config
from autosrh_ray.data.prepared import PreparedData
from autosrh_ray.predict import predict

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["user_id", "item_id", "category", "city", "price", "age", "clicked"]
CATEGORICAL, NUMERICAL = COLUMNS[:4], COLUMNS[4:6]


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        user, category = int(rng.zipf(1.4) % 200), int(rng.integers(0, 8))
        rows.append({"user_id": f"u{user}", "item_id": f"i{int(rng.zipf(1.3) % 300)}", "category": f"c{category}",
                     "city": str(rng.choice(["a", "b", "c"])), "price": f"{rng.gamma(2.0, 10.0):.2f}",
                     "age": int(rng.integers(18, 80)), "clicked": int(rng.random() < 0.1 + 0.5 * (category < 3))})
    return rows


def test_unseen_values_score_as_their_fields_oov_rows(ray_cluster, tmp_path):
    config = load_config(ROOT / "workflows" / "tabular-example.yaml", [
        f"dataset.path={_write(tmp_path / 'table.csv', _rows(3000))}", "ray.num_workers=0", "search.K=8",
        "search.L=3", "model.hidden=[16]", "train.batch_size=256", "search.max_epochs=2", "train.max_epochs=2",
        "report.reference=none", "report.plots=false"])
    run = tmp_path / "run"
    workflow.run(config, run, log=lambda _: None)

    unseen = _rows(20, seed=1)
    for i, row in enumerate(unseen):
        row.update({name: f"never-seen-{name}-{i}" for name in CATEGORICAL})
    predict(run, str(_write(tmp_path / "unseen.csv", unseen)), tmp_path / "scores.parquet", log=lambda _: None)
    scores = pq.read_table(tmp_path / "scores.parquet").column("score").to_numpy()

    space = PreparedData.load(str(run / "data")).features
    ids, values = space.encode({name: [row[name] for row in unseen] if name in CATEGORICAL else
                                np.array([float(row[name]) for row in unseen]) for name in CATEGORICAL + NUMERICAL})
    names = [field.name for field in space.fields]
    for name in CATEGORICAL:
        f = names.index(name)
        assert space.vocabs[f].oov_id != 0  # distinct from the most frequent feature
        ids[:, f] = space.vocabs[f].oov_id
    with torch.no_grad():
        expected = torch.sigmoid(load_model(run / "model.pt")(torch.from_numpy(ids), torch.from_numpy(values)))
    assert len(scores) == len(unseen)
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-6, atol=0)
