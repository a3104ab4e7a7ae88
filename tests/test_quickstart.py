"""The quickstart workflow end to end through the CLI, checked against the report.json contract."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from autosrh_ray.artifact.format import load_model

pytestmark = pytest.mark.slow

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
    dims = pq.read_table(out / r["artifacts"]["dims"])
    kept = sum(dims.column("kept_dims").to_pylist())  # counted from the written mixed dimension scheme
    assert kept == sum(len(d) for d in dims.column("dims").to_pylist())
    assert dims.num_rows == m
    assert r["params"]["kept"] == kept == int(m * k / r["cr_target"] + 0.5)  # pruning keeps exactly round(MK/CR)
    assert r["cr_achieved"] == pytest.approx(m * k / kept)
    assert r["params"]["linear"] == m
    rows = r["rows"]
    assert rows["read"] == rows["train"] + rows["valid"] + rows["test"] + rows["skipped"]
    assert rows["skipped"] == sum(rows["skipped_by_reason"].values())
    for split in ("test", "valid"):
        assert set(r[split]) == {"auc", "logloss"} and 0.5 < r[split]["auc"] < 1
    assert set(r["timings_s"]) == {"prepare", "search", "prune", "retrain", "total"}
    for rel in r["artifacts"].values():
        assert (out / rel).exists(), rel


def test_every_stage_stops_on_validation_and_says_why(quickstart):
    _, r = quickstart
    assert list(r["stages"]) == ["search", "retrain"]
    for name, stage in r["stages"].items():
        assert stage["stop_reason"] == "patience", (name, stage)  # the shipped quickstart converges, not capped
        assert 0 <= stage["best_epoch"] < stage["epochs"] and stage["steps"] > 0
    assert r["epochs"] == {"search": r["stages"]["search"]["epochs"], "retrain": r["stages"]["retrain"]["epochs"]}
    assert r["valid_optimistic"] is True and "optimistic" in r["notes"][0]  # α was fitted on validation


def test_the_ue_reference_and_the_report_md_come_with_the_run(quickstart):
    out, r = quickstart
    ref = r["reference"]
    assert (ref["method"], ref["budget"], ref["cr_achieved"]) == ("uniform", "uniform", 1.0)
    assert ref["params"]["kept"] == r["params"]["uniform"] and set(ref["test"]) == {"auc", "logloss"}
    assert [m["budget"] for m in r["models"]] == ["cr10"] and r["models"][0]["test"] == r["test"]
    text = (out / "report.md").read_text()
    assert "| autosrh | cr10" in text and "| uniform | none (UE)" in text
    for name in ("alpha.png", "kept_dims.png", "quality.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_compact_artifact_is_smaller_than_the_dense_table_and_loads(quickstart):
    out, r = quickstart
    stored = torch.load(out / r["artifacts"]["model"], weights_only=True)["embedding"]
    assert sum(seg["values"].numel() for seg in stored["segments"]) == r["params"]["kept"]  # one per kept entry
    model = load_model(out / r["artifacts"]["model"])
    assert model.embedding.values.numel() == r["params"]["kept"]  # inference holds the kept entries only
    assert max(t.numel() for t in model.embedding.buffers()) < r["num_features"] * r["K"]
    assert r["artifact_bytes"]["compact_model"] < r["artifact_bytes"]["dense_embedding"]
