"""The public Python API (``autosrh_ray.run``, ``autosrh_ray.load_model``, ``Model.score``) as a user calls it: in a
fresh interpreter, with and without a Ray the caller started; rows scored in memory (a pandas DataFrame, with and
without the label column; an Arrow Table) equal ``autosrh-ray predict`` on the same rows to 1e-6."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import autosrh_ray
from autosrh_ray.config import load_config
from autosrh_ray.data.generate import criteo_shape, write_criteo_shards
from autosrh_ray.errors import ConfigError
from autosrh_ray.predict import predict

ROOT = Path(__file__).resolve().parents[1]
TINY = {"dataset.synthetic.rows": 8000, "search.max_epochs": 2, "train.max_epochs": 2, "search.K": 4, "search.L": 2,
        "train.batch_size": 512, "report.plots": False, "report.reference": "none"}

SCRIPT = """
import json, sys
import pandas as pd
import autosrh_ray

out, rows_file, prior, overrides = sys.argv[1], sys.argv[2], sys.argv[3] == "prior", json.loads(sys.argv[4])
if prior:  # a notebook's own Ray, started before the run
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False)
result = autosrh_ray.run("workflows/quickstart.yaml", out, overrides, log=lambda _: None)
model = autosrh_ray.load_model(out)
columns = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
rows = pd.read_csv(rows_file, sep="\\t", header=None, names=columns, keep_default_na=False, na_values={
    f"I{i}": [""] for i in range(1, 14)}, dtype={f"C{i}": str for i in range(1, 27)})
print(json.dumps({"budgets": [m.budget for m in result.report.models], "test": result.report.top.test,
                  "output": result.output, "bytes": model.bytes, "dims": int(model.dims.sum()),
                  "kept": result.report.top.params.kept, "embedding_bytes": result.report.top.bytes.embedding,
                  "scores": model.score(rows).tolist(),
                  "unlabelled": model.score(rows.drop(columns=["label"])).tolist(),
                  "cr20": result.model("cr20").score(rows.head(5)).tolist()}))
"""


@pytest.fixture(scope="module")
def new_rows(tmp_path_factory):
    base = tmp_path_factory.mktemp("api-rows")
    config = load_config(ROOT / "workflows" / "quickstart.yaml", [f"{k}={v}" for k, v in TINY.items()])
    write_criteo_shards(criteo_shape(config.dataset.synthetic), base, 400, 1)
    return base / "part-00000.txt"


@pytest.mark.parametrize("prior", ["none", "prior"])
def test_run_load_and_score_from_python_with_and_without_a_ray_of_ones_own(new_rows, tmp_path, prior):
    """Training in the driver (``ray.num_workers: 0``; Ray Train on the caller's Ray is what ``test_study`` runs):
    what is checked here is the API around the run."""
    out = tmp_path / "run"
    overrides = {**TINY, "prune.cr": [10, 20], "ray.num_workers": 0}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(new_rows), prior, json.dumps(overrides)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert got["budgets"] == ["cr10", "cr20"] and got["test"] == report["test"] and got["output"] == str(out)
    assert got["dims"] == got["kept"] and got["bytes"] == got["embedding_bytes"]
    predict(out, str(new_rows), tmp_path / "scores.parquet", log=lambda _: None)
    table = pq.read_table(tmp_path / "scores.parquet").sort_by("position")
    expected = table.column("score").to_numpy()
    assert len(got["scores"]) == len(expected) == 400
    np.testing.assert_allclose(got["scores"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["unlabelled"], expected, rtol=0, atol=1e-6)  # scores never read the label
    predict(out / "models" / "cr20", str(new_rows), tmp_path / "cr20.parquet", log=lambda _: None)
    cr20 = pq.read_table(tmp_path / "cr20.parquet").sort_by("position").column("score").to_numpy()[:5]
    np.testing.assert_allclose(got["cr20"], cr20, rtol=0, atol=1e-6)
    assert np.abs(cr20 - expected[:5]).max() > 0  # another model: not the same scores


def test_a_row_missing_a_field_column_is_one_line_naming_it(new_rows, tmp_path, ray_cluster):
    out = tmp_path / "run"
    autosrh_ray.run(ROOT / "workflows" / "quickstart.yaml", out, {**TINY, "ray.num_workers": 0, "prune.cr": 10},
                    log=lambda _: None)
    model = autosrh_ray.load_model(out)
    rows = pd.DataFrame({"I1": [1.0], "C1": ["a"]})
    with pytest.raises(ConfigError) as err:
        model.score(rows)
    assert str(err.value).startswith("rows: the rows lack the field column(s) C2, C3, ") and "\n" not in str(err.value)
    assert "I2, I3 (they have I1, C1)" in str(err.value)
    # an Arrow table in the same columns scores as the DataFrame does; a value never seen gets its OOV row
    full = pd.read_csv(new_rows, sep="\t", header=None, keep_default_na=False,
                       names=["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)],
                       na_values={f"I{i}": [""] for i in range(1, 14)}, dtype={f"C{i}": str for i in range(1, 27)})
    head = full.head(20)
    np.testing.assert_allclose(model.score(pa.Table.from_pandas(head, preserve_index=False)), model.score(head))
    unseen = head.assign(C1="never-seen-value")
    assert not np.allclose(model.score(unseen), model.score(head))
