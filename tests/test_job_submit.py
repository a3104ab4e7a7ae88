"""``ray job submit`` of the quickstart against a Ray head of the test's own, token authentication on.

The head runs in its own session (``setsid``), with its own ``--temp-dir`` and every port it opens set, so it
cannot clash with another Ray on the machine; the test ends exactly that session's processes (never Ray's
stop-everything command) and checks that none is left. While the job runs, ``ray job logs`` must already show the epoch lines of the
search, then of the retrain: progress is printed as it happens, not when a stage ends.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .ray_head import RAY, ray_head as start_head

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Many evaluations of small batches: after its first epoch each stage still trains for seconds (`ray job logs`
# delivers lines about once a second), so lines printed live arrive in an earlier delivery than the stage's last.
TINY = ["dataset.synthetic.rows=30000", "train.batch_size=64", "search.max_epochs=6", "search.patience=6",
        "train.max_epochs=16", "train.patience=16",
        "report.reference=none", "report.plots=false"]


@pytest.fixture(scope="module")
def ray_head():
    """A head of this test's own (2 CPUs), its environment for clients (token), its dashboard address."""
    with start_head() as head:
        yield head


def _job(command: str, args: list[str], head: dict) -> str:
    """``ray job COMMAND --address … ARGS``: its output (the CLI prints status lines on stderr)."""
    done = subprocess.run([RAY, "job", command, "--address", head["address"], *args], env=head["env"],
                          capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_job_submit_runs_the_quickstart_with_live_progress(ray_head, tmp_path):
    output = tmp_path / "out"
    # as README documents it: the workflows folder as the working directory (no packaging notices from Ray)
    submit = _job("submit", ["--no-wait", "--working-dir", str(REPO / "workflows"), "--", sys.executable, "-m",
                             "autosrh_ray", "run", "quickstart.yaml", "--output", str(output),
                             *[a for o in TINY for a in ("--set", o)]], ray_head)
    ids = [w.strip("'\"`") for w in submit.split() if w.strip("'\"`").startswith("raysubmit_")]
    assert ids, submit[-3000:]
    assert "is now ignored by default" not in submit and "Ignoring upload" not in submit, submit[-3000:]
    job_id = ids[0]

    # `ray job logs --follow` streams the job's output until it ends; stamp each line as it arrives
    follow = subprocess.Popen([RAY, "job", "logs", "--address", ray_head["address"], "--follow", job_id],
                              env=ray_head["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(600, follow.kill)
    watchdog.start()
    arrived: list[tuple[float, str]] = [(time.monotonic(), line) for line in follow.stdout]
    watchdog.cancel()
    follow.wait()
    logs = "".join(line for _, line in arrived)
    status = _job("status", [job_id], ray_head)
    assert "succeeded" in status.lower(), (status[-500:], logs[-4000:])

    def first(text: str) -> float:
        return next(t for t, line in arrived if text in line)

    # Live, not in a burst when the stage ends: each stage's first epoch line came in an earlier delivery than its
    # last line (deliveries are ~1 s apart; lines of one delivery arrive microseconds apart).
    assert first("[search] stopped by") - first("[search] epoch 0") > 0.5, logs[-4000:]
    assert first("[retrain cr10] stopped by") - first("[retrain cr10] epoch 0") > 0.5, logs[-4000:]
    assert first("[search] stopped by") < first("[retrain cr10] epoch 0")

    report = json.loads((output / "report.json").read_text())  # where --output said, not in the job's copy
    assert report["method"] == "autosrh" and 0.5 < report["test"]["auc"] <= 1.0
    assert f"wrote {output / 'report.json'}" in logs


GCS_PORT = "import ray; print('gcs', ray.get_runtime_context().gcs_address.rsplit(':', 1)[1])"


def _gcs_port_of(code: str, head: dict) -> int:
    done = subprocess.run([sys.executable, "-c", code + "\n" + GCS_PORT], env=head["env"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("gcs ")[-1].split()[0])


def test_a_local_run_does_not_join_a_head_started_on_the_machine(ray_head):
    # the trap is real: a Ray found on this machine is joined (what a plain ray.init() does; "auto" fails instead of
    # starting one when none is found, so this control cannot pass by accident)
    assert _gcs_port_of("import ray; ray.init(address='auto')", ray_head) == ray_head["gcs_port"]
    # ray.address: local (the default) starts a Ray of its own instead
    ours = _gcs_port_of("from autosrh_ray.config import RayConfig\nfrom autosrh_ray.runtime import connect\n"
                        "assert connect(RayConfig())", ray_head)
    assert ours != ray_head["gcs_port"]
