"""On a cluster of more than one node a run checks, before any work, that its paths are absolute and seen from
every node (a 2-node Ray cluster on this machine, in a subprocess: the test session's own Ray stays as it is)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts a 2-node Ray cluster

SCRIPT = r'''
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from autosrh_ray.config import ConfigError
from autosrh_ray.distributed.shared_paths import check_shared_paths

base = Path(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
try:
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    (base / "data.txt").write_text("x\n")
    print("checked", check_shared_paths({"dataset.path": str(base / "data.txt")}, {"--output": str(base / "out")}))
    print("markers left", len(list((base / "out").iterdir())))
    for inputs, outputs in (({}, {"--output": "runs/quickstart"}),
                            ({"dataset.path": str(base / "missing.txt")}, {"--output": str(base / "out")})):
        try:
            check_shared_paths(inputs, outputs)
            print("no error")
        except ConfigError as err:
            print("error", err)
finally:
    ray.shutdown()
    cluster.shutdown()
'''


def test_paths_are_checked_from_every_node(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("checked", "markers", "error", "no")]
    assert lines[0] == "checked 2" and lines[1] == "markers left 0"
    assert lines[2].startswith("error --output: 'runs/quickstart' is relative: on a cluster of 2 nodes")
    assert lines[3].startswith("error dataset.path: ") and "is not visible from node" in lines[3]
