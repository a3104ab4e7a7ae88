"""Attach to a Ray cluster (``ray.address``) or start a local one, once per process, quietly.

The workflow prints its own progress (epoch metrics per stage), so by default Ray's driver-side INFO logs, Ray
Data's progress lines and the workers' log forwarding are turned off (a bad-input error stays one line; worker
logs stay in Ray's session log directory, and a failing worker still raises in the driver).
``ray.verbose: true`` brings them all back. Token authentication stays as Ray sets it.
"""
from __future__ import annotations

import logging

from .config import RayConfig


def connect(ray_config: RayConfig) -> bool:
    """Reuse an initialised Ray, else ``ray.init`` (local for ``local``); True if this call started it."""
    import ray
    import ray.data

    started = False
    if not ray.is_initialized():
        address = None if ray_config.address in ("", "local") else ray_config.address
        level = logging.INFO if ray_config.verbose else logging.ERROR
        ray.init(address=address, include_dashboard=False, logging_level=level, log_to_driver=ray_config.verbose)
        started = True
    if not ray_config.verbose:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    return started
