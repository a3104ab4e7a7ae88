"""A batch tool must never wait forever without a word, nor take Ctrl-C for success: the CLI in a process group of
its own, as a user's terminal runs it.

* Ctrl-C (SIGINT to the run's process group) during the search ends the run within a minute, exit 130, with a
  line saying it was interrupted and that re-running resumes; re-running resumes the search and finishes.
* A stage that can never start (a GPU asked of a machine without one) fails within ``ray.stall_timeout_s`` + 30 s
  with one line naming the stage, what Ray waits for and the key to raise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "autosrh_ray", "run", "workflows/quickstart.yaml"]
REPO = Path(__file__).resolve().parents[1]
# small, but a search of many evaluations (~0.8 s each): Ctrl-C lands in the middle of it, not after the Train
# worker (which goes on while the driver shuts Ray down, seconds) has finished the whole search
TINY = ["dataset.synthetic.rows=30000", "train.batch_size=256", "search.max_epochs=40", "search.patience=40",
        "train.max_epochs=3", "train.patience=1", "report.reference=none", "report.plots=false"]


def _start(output: Path, *overrides: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a private Ray of its own
    args = [a for o in (*TINY, *overrides) for a in ("--set", o)]
    return subprocess.Popen([*CLI, "--output", str(output), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if text in line or time.monotonic() > deadline:
            return lines
    return lines


def test_ctrl_c_during_the_search_stops_the_run_and_rerunning_resumes_it(tmp_path):
    output = tmp_path / "run"
    proc = _start(output)
    try:
        seen = _wait_for_line(proc, "[search] epoch 1:", 300)
        assert any("[search] epoch 1:" in line for line in seen), "".join(seen)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - sent < 60
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "again to resume" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not (output / "report.json").exists()

    again = _start(output)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, (out[-3000:], err[-3000:])
    lines = out.splitlines()
    resumed = [i for i, line in enumerate(lines) if line.startswith("[search] resumed from its checkpoint after ")]
    assert len(resumed) == 1, out[-3000:]  # resumed from a checkpoint, not from epoch 0 …
    held = int(lines[resumed[0]].split("after evaluation ")[1].split(" ")[0])
    search_epochs = [int(line.split("epoch ")[1].split(":")[0]) for line in lines[resumed[0]:]
                     if line.startswith("[search] epoch ")]
    # … and the re-run's terminal shows every evaluation once: those its checkpoint holds, then the new ones
    assert held >= 1 and search_epochs == list(range(len(search_epochs))) and len(search_epochs) > held, out[-3000:]
    report = json.loads((output / "report.json").read_text())
    assert 0.5 < report["test"]["auc"] <= 1.0


def test_a_stage_that_cannot_start_fails_within_the_stall_timeout_with_one_line(tmp_path):
    timeout_s = 12
    proc = _start(tmp_path / "run", "ray.gpus_per_worker=1", f"ray.stall_timeout_s={timeout_s}")
    try:
        seen = _wait_for_line(proc, "ray train:", 300)  # the search's Train run is about to be asked for
        started = time.monotonic()
        out, err = proc.communicate(timeout=timeout_s + 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - started < timeout_s + 30, "".join(seen) + out
    assert proc.returncode == 3, err[-3000:]
    message = err.strip().splitlines()
    assert len(message) == 1, err[-3000:]
    assert "[search]" in message[0] and "ray.stall_timeout_s" in message[0], message
    assert "GPU: 1" in message[0], message  # what Ray waits for: the worker's GPU
