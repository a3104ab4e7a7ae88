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
