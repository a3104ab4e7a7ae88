"""Which Ray a run attaches to: ``local`` starts a private one (never another user's cluster on the machine),
except inside a Ray job (``RAY_ADDRESS`` set), where it attaches to the job's cluster."""
import os
import subprocess
import sys

import pytest

from autosrh_ray.config import ConfigError, load_config
from autosrh_ray.runtime import init_address


def test_local_starts_a_private_ray_outside_a_job():
    assert init_address("local", {}) == "local"
    assert init_address("", {}) == "local"


def test_local_inside_a_ray_job_attaches_to_the_jobs_cluster():
    assert init_address("local", {"RAY_ADDRESS": "http://127.0.0.1:8265"}) is None  # ray.init reads RAY_ADDRESS


def test_auto_and_explicit_addresses_are_passed_through():
    assert init_address("auto", {}) == "auto"
    assert init_address("ray://head:10001", {"RAY_ADDRESS": "x"}) == "ray://head:10001"


def test_a_local_ray_gets_the_configured_object_store(tmp_path):
    """``ray.object_store_mb`` sizes the object store of the Ray a run starts (a small machine's bound on what Ray
    Data buffers), checked in a fresh process against what Ray reports."""
    script = (
        "import ray\n"
        "from autosrh_ray.config import RayConfig\n"
        "from autosrh_ray.runtime import connect\n"
        "assert connect(RayConfig(object_store_mb=150))\n"
        "print(int(ray.cluster_resources()['object_store_memory']))\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == 150 * 2**20


def test_object_store_smaller_than_rays_minimum_is_a_config_error():
    with pytest.raises(ConfigError, match="ray.object_store_mb"):
        load_config(None, ["ray.object_store_mb=10"])


def test_cluster_notices_reach_the_terminal_as_one_line_or_not_at_all(monkeypatch, capsys):
    """Ray prints every notice its cluster publishes straight to stdout (a lost node's comes with ~45 lines of
    its raylet's state dump): each becomes its first line, or nothing where the run says it itself (a lost node)
    or it concerns Ray's internals; forwarded worker output is not touched."""
    from ray._private import worker

    from autosrh_ray.runtime import one_line_cluster_notices

    passed = []
    monkeypatch.setattr(worker, "print_to_stdstream", lambda data, ignore_prefix: passed.append(data))
    one_line_cluster_notices()
    one_line_cluster_notices()  # once only: a second call does not wrap the wrapper
    dump = "\n".join(["    [state-dump] \tNodeManager.GcsCheckAlive - 1 total"] * 45)
    for message in ("\x1b[33m(raylet)\x1b[0m The node with node id: ab12 and address: 10.0.0.3 has been marked dead "
                    "because the detector has missed too many heartbeats from it.\n\t(1) raylet crashes",
                    "Raylet is terminated. Termination is unexpected. Last 20 lines of the Raylet logs:\n" + dump,
                    "WARNING: 4 PYTHON worker processes have been started on node: ab12 with address: 10.0.0.3",
                    "Task was killed due to the node running low on memory.\nMemory on the node was 23.1GB / 24GB"):
        worker.print_to_stdstream({"lines": [message], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": ["a worker's line"], "pid": 123, "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert out == "[ray] Task was killed due to the node running low on memory.\n"
    assert passed == [{"lines": ["a worker's line"], "pid": 123, "is_err": False}]
