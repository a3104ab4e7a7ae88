"""benchmarks/gpu_smoke.sh is correct without a GPU: ``--cpu --tiny`` runs the quickstart workflow through Ray Train
and the step figures on the CPU, and writes what the GPU run records."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_smoke_script_runs_on_cpu_tiny(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh"), "--cpu", "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "quickstart" / "report.json").read_text())
    assert report["method"] == "autosrh" and report["params"]["kept"] < report["params"]["uniform"]
    figures = json.loads((tmp_path / "gpu_smoke.json").read_text())
    for case in ("quickstart", "fm_10m"):
        for phase in ("ue", "search", "retrain_cr10"):
            assert figures[f"{case}_cpu_{phase}_samples_per_s"] > 0
        assert figures[f"{case}_cpu_search_to_ue_step_time"] > 1  # a search step does more than a UE step
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh"), "--gpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument --gpu" in bad.stderr
