"""Shared fixtures. ``ray_cluster`` starts Ray once per test session (each start costs seconds); every test
module that needs Ray (data, distributed, workflow tests) reuses it instead of calling ``ray.init`` itself."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def other_ray():
    """A Ray head of the suite's own beside the private one (its own temp dir, ports and session; ended by its
    PIDs): from the first test that asks for it to the end of the session, everything after runs beside another
    Ray instance, as on a shared machine."""
    from .ray_head import ray_head

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
