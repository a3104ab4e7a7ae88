"""Attach to a Ray cluster (``ray.address``) or start a local one, once per process, quietly.

The workflow prints its own progress (epoch metrics per stage), so by default Ray's driver-side INFO logs, Ray
Data's progress lines and the workers' log forwarding are turned off (a bad-input error stays one line; worker
logs stay in Ray's session log directory, and a failing worker still raises in the driver).
``ray.verbose: true`` brings them all back. Token authentication stays as Ray sets it.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from .config import RayConfig


def init_address(configured: str, environ: Optional[dict] = None) -> Optional[str]:
    """The ``ray.init`` address for ``ray.address``: ``local`` starts a private Ray (never joining a cluster that
    someone else started on this machine) — except inside a Ray job, which sets ``RAY_ADDRESS``: the run then
    attaches to the job's cluster, so one YAML works locally and as a job; ``auto`` joins the running cluster;
    anything else is a cluster address."""
    environ = os.environ if environ is None else environ
    if configured in ("", "local"):
        return None if environ.get("RAY_ADDRESS") else "local"
    return configured


# Ray kills idle workers above a soft limit (default: the CPU count) after a second. Every process of a Train run
# (controller, worker, its Ray Data tasks' workers) carries Train's runtime env, so the next stage's data tasks can
# use only workers with that env; with the default limit those were gone by then and each stage's first batch waited
# for new processes (quickstart retrain: 1.55 s -> 0.33 s, the whole run 54.5 s -> 51 s with a higher limit).
IDLE_WORKERS_KEPT = 8  # beyond the CPU count


LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": (os.cpu_count() or 1) + IDLE_WORKERS_KEPT}


def connect(ray_config: RayConfig) -> bool:
    """Reuse an initialised Ray, else ``ray.init`` at :func:`init_address`; True if this call started it."""
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        address = init_address(ray_config.address)
        level = logging.INFO if ray_config.verbose else logging.ERROR
        # The dashboard serves Ray's state API, which Ray Train uses to clean up after a run whose controller was
        # stopped (a Tune trial stopped by its scheduler): without it, the run's CPUs stay reserved.
        ray.init(address=address, logging_level=level, log_to_driver=ray_config.verbose,
                 _system_config=LOCAL_SYSTEM_CONFIG if address == "local" else None)
        started = True
    if not ray_config.verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    return started
