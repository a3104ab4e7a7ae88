"""A backbone in a file outside the project (``examples/cross_network.py``, put on ``PYTHONPATH`` as a user would)
searched from the command line: ``compare`` runs AutoSrh, UE, magnitude pruning and PEP with it, ``predict`` scores
with the artifact it wrote, and a class that breaks the contract stops the run before any training with one line
naming ``model.name``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("autosrh-ray"))
SMALL = ["ray.num_workers=0", "dataset.synthetic.rows=10000", "search.K=8", "search.L=4", "train.batch_size=512",
         "prune.cr=4", "search.pep_l2=0.01", "search.max_epochs=4", "train.max_epochs=4",
         "model.name=cross_network:CrossNet", "model.options={layers: 1}"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples")}
    return subprocess.run([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=cwd, timeout=900)


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.mark.slow
def test_compare_and_predict_with_a_backbone_from_outside_the_project(tmp_path):
    out = tmp_path / "cmp"
    done = _cli("compare", str(ROOT / "workflows" / "quickstart.yaml"), "--methods", "autosrh,uniform,magnitude,pep",
                "--seeds", "1", "--output", str(out), *_sets(SMALL), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]
    result = json.loads((out / "comparison.json").read_text())
    assert result["model"] == "cross_network:CrossNet"
    by_method = {r["method"]: r for r in result["runs"]}
    assert set(by_method) == {"autosrh", "uniform", "magnitude", "pep"}
    for method, row in by_method.items():
        assert row["test"]["auc"] > 0.55, (method, row["test"])  # it learned: mechanics, not quality
    run = out / "autosrh" / "seed0"
    report = json.loads((run / "report.json").read_text())
    assert report["model"] == "cross_network:CrossNet"
    rows = tmp_path / "rows"
    assert _cli("generate", str(ROOT / "workflows" / "quickstart.yaml"), "--rows", "300", "--new-rows",
                "--output", str(rows), *_sets(SMALL[1:2]), cwd=tmp_path).returncode == 0
    scored = _cli("predict", "--model", str(run), "--input", str(rows), "--output", str(tmp_path / "s.parquet"),
                  cwd=tmp_path)
    assert scored.returncode == 0, scored.stdout[-3000:]
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 300


@pytest.mark.parametrize("name, message", [
    ("cross_network:Nope", "model.name: module 'cross_network' has no 'Nope'"),
    ("no_such_module:Net", "model.name: cannot import 'no_such_module'"),
])
def test_a_backbone_that_cannot_be_imported_stops_before_the_data_is_read(tmp_path, name, message):
    done = _cli("run", str(ROOT / "workflows" / "quickstart.yaml"), "--output", str(tmp_path / "bad"),
                *_sets([*SMALL, f"model.name={name}"]), cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines[-1].startswith("autosrh-ray: error: ") and message in lines[-1], done.stdout
    assert "Traceback" not in done.stdout and "[prepare]" not in done.stdout  # at config time: nothing read


def test_a_wrong_output_shape_stops_once_the_fields_are_known(tmp_path):
    """A class that imports and builds but returns (B, 1): found by the probe after prepare, before training."""
    (tmp_path / "wrong_shape.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self, num_fields, dim):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(num_fields * dim, 1)\n"
        "    def forward(self, embeddings, first_order):\n        return self.lin(embeddings.flatten(1))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([CLI, "run", str(ROOT / "workflows" / "quickstart.yaml"), "--output", str(tmp_path / "o"),
                           *_sets([*SMALL[:-2], "dataset.synthetic.rows=2000", "model.name=wrong_shape:Net"])],
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 2, done.stdout
    last = [line for line in done.stdout.splitlines() if line.strip()][-1]
    assert last == ("autosrh-ray: error: model.name: wrong_shape:Net: forward must return logits of shape (B,) = "
                    "(2,) for 2 rows; got (2, 1)"), done.stdout
    assert "epoch" not in done.stdout


def test_the_own_training_loop_example_searches_prunes_and_retrains(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "own_training_loop.py"), str(tmp_path / "data")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    kept, total = [int(x.replace(",", "")) for x in line.split()[1:4:2]]
    assert round(total / kept) == 10  # cr 10
    assert float(line.rsplit(" ", 1)[1]) > 0.65, line  # learned something on the planted data
