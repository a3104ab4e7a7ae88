"""Shared fixtures. ``ray_cluster`` starts Ray once per test session (each start costs seconds); every test
module that needs Ray (data, distributed, workflow tests) reuses it instead of calling ``ray.init`` itself.
``other_ray`` is a second Ray instance beside it; ``s3_env`` a local S3 server (moto) for a test module."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from autosrh_ray import storage

from .ray_head import free_ports, ray_head

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
BUCKET = "autosrh-test"  # the one bucket of the tests' S3 server (s3_env)


@pytest.fixture(scope="session")
def other_ray():
    """A Ray head of the suite's own beside the private one (its own temp dir, ports and session; ended by its
    PIDs): from the first test that asks for it to the end of the session, everything after runs beside another
    Ray instance, as on a shared machine."""
    with ray_head(num_cpus=1, jobs=False) as head:
        yield head


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs (the smallest machine we support), started once per session."""
    import ray

    from autosrh_ray.runtime import start_local

    if not ray.is_initialized():
        # as the workflow starts it: its processes know its address (other Ray instances may run beside it);
        # with the dashboard: Ray Train cleans up runs stopped by a Tune scheduler through its state API
        start_local(num_cpus=2, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    # Left running until the interpreter exits: other session-scoped users may still need it.


def shared_sample(relative: str) -> Path:
    """A real-data sample under ``../shared/data``: missing fails in CI (env CI=true) and skips elsewhere."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real-data sample missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server with one bucket; the environment variables a user would export for their own S3."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    (port,) = free_ports(1)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage._remote.cache_clear()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    storage._remote.cache_clear()
