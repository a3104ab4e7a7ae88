"""A Ray head of a test's own, beside whatever else runs on the machine: its own session (``setsid``), its own
``--temp-dir``, every port it opens set, token authentication on. :func:`ray_head` yields it; at the end exactly
that session's processes are ended (never Ray's stop-everything command) and none may be left."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

RAY = str(Path(sys.executable).with_name("ray"))
PORTS = ("port", "node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-port",
         "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_port_range() -> dict[str, int]:
    """A node's worker ports: 200 of them below the ephemeral range ``free_ports`` draws from (so the two never
    overlap) and away from Ray's default range, which another Ray on the machine uses."""
    low = 20_000 + secrets.randbelow(40) * 250
    return {"min_worker_port": low, "max_worker_port": low + 200}


def session_pids(sid: int) -> list[int]:
    """Live processes of the session the head was started in (Ray's workers get process groups of their own,
    but stay in the session)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout.split()
    return [int(p) for p, s, st in zip(out[::3], out[1::3], out[2::3]) if int(s) == sid and not st.startswith("Z")]


def end_session(sid: int) -> None:
    # Ray's workers and agents outlive SIGTERM for many seconds (the suite waited 20 s for them at every head):
    # a short grace for the head to stop cleanly, then SIGKILL for whatever is left
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while session_pids(sid) and time.time() < deadline:
            time.sleep(0.5)


@contextmanager
def ray_head(num_cpus: int = 2, jobs: bool = True) -> Iterator[dict]:
    """A running head: ``env`` (its token, for clients), ``address`` (dashboard URL), ``gcs_port``.
    ``jobs``: wait until its job server answers (else until its GCS address file is written)."""
    root = Path(tempfile.mkdtemp(prefix="ar-head-", dir="/tmp"))  # short: Ray's socket paths are limited
    temp_dir = root / "ray"
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    # RAY_TMPDIR: the head records its address where a plain ray.init() with the same RAY_TMPDIR looks for
    # "the cluster on this machine" — the trap a local run must not fall into
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_TMPDIR": str(root)}
    env.pop("RAY_ADDRESS", None)
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    workers = worker_port_range()
    assert not any(workers["min_worker_port"] <= p <= workers["max_worker_port"] for p in ports.values())
    command = [RAY, "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               *[f"--{name.replace('_', '-')}={port}" for name, port in {**ports, **workers}.items()]]
    head = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the job agent needs a moment after the head is up
            if jobs:
                probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True,
                                       text=True)
                if probe.returncode == 0:
                    break
            elif any(temp_dir.glob("session_latest/logs/raylet.out")):
                break
            assert head.poll() is None, head.stdout.read().decode()[-3000:]
            time.sleep(2)
        else:
            raise AssertionError(f"the test's Ray head did not come up in 120 s ({address})")
        yield {"env": env, "address": address, "gcs_port": ports["port"]}
    finally:
        end_session(head.pid)
        head.wait(timeout=30)
        assert not session_pids(head.pid), "processes of the test's head were left running"
        shutil.rmtree(root, ignore_errors=True)


def live_placement_groups(ray, wait_s: float = 30) -> list:
    """Placement groups of the connected Ray not removed, after waiting up to ``wait_s`` for the last run's to go."""
    from ray.util.state import list_placement_groups

    deadline = time.monotonic() + wait_s
    while True:
        live = list_placement_groups(address=ray.get_runtime_context().gcs_address,
                                     filters=[("state", "!=", "REMOVED")], raise_on_missing_output=False)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(1)
