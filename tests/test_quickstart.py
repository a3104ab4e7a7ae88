"""The quickstart workflow end to end through the CLI, checked against SPEC.md's report contract."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autosrh_ray.artifact import load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run([sys.executable, "-m", "autosrh_ray", "run", str(ROOT / "workflows" / "quickstart.yaml"),
                           "--output", str(out)], capture_output=True, text=True, timeout=600, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_report_follows_the_contract(quickstart):
    out, r = quickstart
    for key in ("method", "model", "dataset", "task", "K", "L", "cr_target", "cr_achieved", "num_features",
                "params", "test", "valid", "rows", "timings_s", "artifacts"):
        assert key in r, key
    assert (r["method"], r["model"], r["dataset"], r["task"]) == ("autosrh", "fm", "synthetic", "classification")
    assert isinstance(r["K"], int) and isinstance(r["L"], int) and isinstance(r["num_features"], int)
    m, k = r["num_features"], r["K"]
    assert r["params"]["uniform"] == m * k
    assert r["params"]["kept"] == int(m * k / r["cr_target"] + 0.5)
    assert r["cr_achieved"] == pytest.approx(m * k / r["params"]["kept"])
    assert r["params"]["linear"] == m
    rows = r["rows"]
    assert rows["read"] == rows["train"] + rows["valid"] + rows["test"] + rows["skipped"]
    assert rows["skipped"] == sum(rows["skipped_by_reason"].values())
    for split in ("test", "valid"):
        assert set(r[split]) == {"auc", "logloss"} and 0.5 < r[split]["auc"] < 1
    assert set(r["timings_s"]) == {"prepare", "search", "prune", "retrain", "total"}
    for rel in r["artifacts"].values():
        assert (out / rel).exists(), rel


def test_compact_artifact_is_smaller_than_the_dense_table_and_loads(quickstart):
    out, r = quickstart
    model = load_model(out / r["artifacts"]["model"])
    kept = int((model.embedding.weight != 0).sum())
    assert kept <= r["params"]["kept"]
    assert r["artifact_bytes"]["compact_model"] < r["artifact_bytes"]["dense_embedding"]
