"""Attach to a Ray cluster (``ray.address``) or start a local one, once per process, quietly.

The workflow prints its own progress (epoch metrics per stage), so by default Ray's driver-side INFO logs, Ray
Data's progress lines and console log records, the workers' log forwarding and the cluster's multi-line notices
are turned off or cut to one line (a bad-input error stays one line; worker and Ray Data logs stay in Ray's
session log directory, and a failing worker still raises in the driver).
``ray.verbose: true`` brings them all back. Token authentication stays as Ray sets it.

A private local Ray is private all the way down: Ray's own helpers inside it (Ray Train's placement-group
cleaner, the state API) find "the" cluster by ``RAY_ADDRESS`` or, without it, by scanning the machine for Ray
processes — which fails ("Found multiple active Ray instances") as soon as another Ray runs beside ours, and
left a Tune study waiting forever for the CPUs of a trial whose placement group was never removed. So the local
instance is started on a port chosen here, with ``RAY_ADDRESS`` naming it in the environment that every one of
its processes inherits (:func:`start_local`).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the duration (what ``ray.init`` hands to the processes it starts)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_local(attempts: int = 3, **init_kwargs) -> str:
    """``ray.init(address="local", **init_kwargs)`` on a free port, with ``RAY_ADDRESS`` set to that port in the
    environment its processes (GCS, raylet and so every worker and actor) inherit; returns the GCS address.

    The driver's own environment is left as it was (a subprocess of the driver starts a Ray of its own, as
    before). A port taken between choosing and binding it is retried with another."""
    import ray

    for attempt in range(attempts):
        port = _free_port()
        try:
            with _environment(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=f"127.0.0.1:{port}"):
                ray.init(address="local", **init_kwargs)
            break
        except (ConnectionError, RuntimeError):
            if ray.is_initialized() or attempt == attempts - 1:
                raise
    address = ray.get_runtime_context().gcs_address
    if not address.endswith(f":{port}"):
        raise RuntimeError(f"the local Ray started at {address}, not on the port it was given ({port})")
    _ADDRESSED.add(address)
    return address


_ADDRESSED: set[str] = set()  # the instances start_local started: their processes know their address


# Ray kills idle workers above a soft limit (default: the CPU count) after a second. Every process of a Train run
# (controller, worker, its Ray Data tasks' workers) carries Train's runtime env, so the next stage's data tasks can
# use only workers with that env; with the default limit those were gone by then and each stage's first batch waited
# for new processes (quickstart retrain: 1.55 s -> 0.33 s, the whole run 54.5 s -> 51 s with a higher limit).
IDLE_WORKERS_KEPT = 8  # beyond the CPU count


LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": (os.cpu_count() or 1) + IDLE_WORKERS_KEPT}


def caller_ray_note() -> Optional[str]:
    """A note for a run on a Ray the caller started (``ray.init()`` in a notebook) without ``RAY_ADDRESS`` while
    another Ray instance runs on this machine, else None. Ray's own helpers inside the caller's instance (Ray
    Train's placement-group cleaner, the state API) look "the" cluster up by ``RAY_ADDRESS`` or by scanning the
    machine, find both and fail — and a study may then wait for CPUs they never freed. Its processes were
    started by the caller, so only the caller can give them the address: :func:`start_local` does."""
    import ray

    if not ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return None
    own = ray.get_runtime_context().gcs_address
    if own in _ADDRESSED:
        return None
    try:
        from ray._private.services import find_gcs_addresses

        others = set(find_gcs_addresses()) - {own}
    except Exception:  # a private helper of Ray's: without it, no note
        return None
    if not others:
        return None
    return (f"note: this Ray was started without RAY_ADDRESS while another Ray runs on this machine "
            f"({', '.join(sorted(others))}): Ray Train's helpers in yours may find the other one and fail to clean "
            f"up; start yours with autosrh_ray.runtime.start_local() instead of ray.init(), or let the run start "
            f"its own")


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
        options = dict(logging_level=level, log_to_driver=ray_config.verbose)
        if address == "local":
            if ray_config.object_store_mb:
                options["object_store_memory"] = ray_config.object_store_mb * 2**20
            start_local(_system_config=LOCAL_SYSTEM_CONFIG, **options)
        else:
            ray.init(address=address, **options)
        started = True
    if not ray_config.verbose:
        quiet_ray_data_console()
        one_line_cluster_notices()
        ray.data.DataContext.get_current().enable_progress_bars = False
    return started


# Cluster notices the run says in its own words (distributed/progress.py's NodeWatch: "lost node …"), or that
# concern only Ray's internals: never shown (their full text stays in the raylet's log files).
_UNSHOWN_NOTICES = ("has been marked dead because", "Raylet is terminated", "worker processes have been started on node")


def one_line_cluster_notices() -> None:
    """Ray's driver prints every notice its cluster publishes (a node's death, with the last 20 lines of its
    raylet's log: a ~45-line ``[state-dump]`` of gRPC counters) straight to stdout, whatever the log settings.
    Here such a notice becomes its first line (``[ray] …``), or nothing where the run says it itself; worker
    output forwarded with ``ray.verbose: true`` is left as it is. Wraps Ray's ``print_to_stdstream`` (a private
    function of ``ray._private.worker``; where it is missing, nothing changes)."""
    import re

    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "one_line_notices", False):
        return
    ansi = re.compile(r"\x1b\[[0-9;]*m")

    def print_notices(data, ignore_prefix: bool):
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        for message in data.get("lines", []):
            first = ansi.sub("", str(message)).strip().splitlines()[0] if str(message).strip() else ""
            if first and not any(text in first for text in _UNSHOWN_NOTICES):
                print(f"[ray] {first[:300]}", file=sys.stderr if data.get("is_err") else sys.stdout, flush=True)

    print_notices.one_line_notices = True
    worker.print_to_stdstream = print_notices


def quiet_ray_data_console() -> None:
    """Ray Data's log records reach its log files under the session directory only, not the terminal.

    Ray Data logs a failed task's error (and Ray's internal stack) to the console before the driver raises it; the
    workflow reports a bad-input error itself, in one line, so the console copy is noise. The ``ray.data``
    logger's own level is left alone: its file handlers keep every record (``logs/ray-data/`` in the session
    directory), and ``ray.verbose: true`` keeps the console too."""
    from ray.data._internal.logging import SessionFileHandler

    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, SessionFileHandler):
            handler.setLevel(logging.CRITICAL + 1)


def on_driver_node() -> dict:
    """Actor options that place one of the run's helpers (the live lines' queue, the statistics shards) on the
    driver's node: a worker node's loss never takes it along, and with the driver's node the run is lost anyway.
    Outside any placement group of the caller's."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
