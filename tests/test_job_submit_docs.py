"""The documented ``ray job submit`` commands (README, cluster/) ship a working directory that Ray 2.60 packages
without its notices ("Directory '.git' is now ignored by default …", "Ignoring upload to cluster for these files:
…"), and the workflow each names is in it; the RayJob manifest packages no working directory at all. The
packaging is Ray's own client-side code (what ``ray job submit`` runs before it submits), run in a fresh process
with INFO logging; the repository root is the control that shows the notices."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = [ROOT / "README.md", ROOT / "cluster" / "README.md", ROOT / "cluster" / "aws.yaml",
              ROOT / "cluster" / "kuberay" / "raycluster.yaml"]
NOTICES = ("is now ignored by default", "Ignoring upload to cluster")
PACKAGE = """
import logging, sys
logging.basicConfig(level=logging.INFO)
logging.getLogger("ray").setLevel(logging.INFO)
from ray._private.runtime_env.working_dir import upload_working_dir_if_needed
upload_working_dir_if_needed({"working_dir": sys.argv[1]}, include_gitignore=True, upload_fn=lambda *a, **k: None)
print("packaged")
"""


def _submits() -> list[tuple[Path, str, str]]:
    """(file, --working-dir, the workflow YAML the entry point runs) of every documented ``ray job submit``."""
    out = []
    for path in DOCUMENTED:
        text = re.sub(r"\\\n[#\s]*", " ", path.read_text())  # continuation lines joined (also in YAML comments)
        for m in re.finditer(r"ray job submit [^\n]*?--working-dir (\S+)\s+--\s+autosrh-ray run (\S+)", text):
            out.append((path, m[1], m[2]))
    return out


def _package(directory: Path) -> str:
    done = subprocess.run([sys.executable, "-c", PACKAGE, str(directory)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "packaged" in done.stdout, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_every_documented_submit_ships_its_workflow():
    submits = _submits()
    assert {p for p, *_ in submits} == set(DOCUMENTED), submits
    for path, working_dir, workflow in submits:
        assert (ROOT / working_dir / workflow).is_file(), (path, working_dir, workflow)


@pytest.mark.parametrize("working_dir", sorted({w for _, w, _ in _submits()}))
def test_the_documented_working_dir_packages_without_rays_notices(working_dir):
    output = _package(ROOT / working_dir)
    assert not any(n in output for n in NOTICES), output[-2000:]


def test_the_repository_root_would_bring_the_notices():
    """The control: packaging the checkout itself prints both (so the test above can see them)."""
    output = _package(ROOT)
    assert all(n in output for n in NOTICES), output[-2000:]


def test_the_rayjob_packages_no_working_dir():
    spec = yaml.safe_load((ROOT / "cluster" / "kuberay" / "rayjob.yaml").read_text())["spec"]
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
    assert "working_dir" not in runtime_env and spec["entrypoint"].startswith("autosrh-ray run /")
