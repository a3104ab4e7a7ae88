"""A Ray cluster of several nodes on this machine, for tests: ``ray.cluster_utils.Cluster`` (how Ray tests itself;
a second ``ray start --address`` on one machine cannot bind its ports in Ray 2.60), in a process of its own.

That process (``python tests/multi_node.py ROOT HEAD_CPUS``, run by :func:`multi_node_cluster`) owns the nodes: its
own temp dir, token and ports, so nothing of it is found by another Ray on the machine, nor it by theirs. It takes
one JSON command a line on stdin and answers one JSON line: ``{"add": CPUS}`` starts a worker node,
``{"remove": NODE_ID}`` kills one at once (its raylet and every process on it, as a lost host),
``{"holding": CLASS_NAME}`` lists the nodes where live actors of that class run, ``{"placed": CLASS_NAME}`` every
node one ever ran on, ``{"nodes": true}`` the alive nodes. At the end exactly its session's processes are ended.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

if __package__:  # imported by the tests (run as a script, the owning process needs only ray_head's free_ports)
    from .ray_head import end_session, session_pids


class MultiNodeCluster:
    """The test's side: ``address`` (GCS), ``env`` (token and temp dir, for a client such as the CLI), and
    commands to the process that owns the nodes."""

    def __init__(self, process: subprocess.Popen, address: str, head: str, env: dict):
        self.process, self.address, self.head, self.env = process, address, head, env

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"the cluster process ended: {self.process.stderr.read()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer

    def add(self, cpus: float = 1) -> str:
        """A worker node with ``cpus`` CPUs; returns its node ID."""
        return self.ask(add=cpus)["node"]

    def remove(self, node: str) -> None:
        """Kill a worker node at once (not gracefully): a lost host."""
        self.ask(remove=node)

    def holding(self, class_name: str) -> list[str]:
        """The worker nodes (never the head) where live actors of ``class_name`` run."""
        return [n for n in self.ask(holding=class_name)["nodes"] if n != self.head]


@dataclass
class NodeLoss:
    """One lost node of a :class:`CliRun`: the line it followed, and seconds from the loss to the run's
    "[ray] lost node" line (``lost_s``) and to the next "resumed from its checkpoint" line (``resumed_s``)."""

    after: str
    at: float
    lost_s: Optional[float] = None
    resumed_s: Optional[float] = None


class CliRun:
    """One ``autosrh-ray`` run against the cluster, as a user runs it: its lines as they come. ``kill_at``: the
    text of lines after each of which a worker node is lost (one holding a Train worker for ``run``, any for
    ``prepare``), and with ``replace`` a node of 1 CPU joins in its place (:attr:`losses`)."""

    def __init__(self, cluster: MultiNodeCluster, workflow: str, output: str, *overrides: str, command: str = "run",
                 kill_at: Sequence[str] = (), replace: bool = True, cwd: str | Path | None = None):
        cli = str(Path(sys.executable).parent / "autosrh-ray")
        args = [cli, command, workflow, "--output", output, "--set", f"ray.address={cluster.address}",
                *[a for o in overrides for a in ("--set", o)]]
        start = time.monotonic()
        process = subprocess.Popen(args, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=cwd or Path(workflow).parent)
        self.lines: list[str] = []
        self.losses: list[NodeLoss] = []
        todo = list(kill_at)
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))
            now = time.monotonic()
            if self.losses:
                last = self.losses[-1]
                if last.lost_s is None and line.startswith("[ray] lost node"):
                    last.lost_s = now - last.at
                if last.resumed_s is None and "] resumed from its checkpoint" in line:
                    last.resumed_s = now - last.at
            if todo and todo[0] in line:
                held = (cluster.holding("RayTrainWorker") if command == "run"
                        else [n for n in cluster.ask(nodes=True)["nodes"] if n != cluster.head])
                if held:
                    cluster.remove(held[0])
                    self.losses.append(NodeLoss(todo.pop(0), time.monotonic()))
                    if replace:
                        cluster.add(1)
        self.rc = process.wait(timeout=600)
        self.seconds = time.monotonic() - start

    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def multi_node_cluster(head_cpus: float, workers: tuple[float, ...] = ()) -> Iterator[MultiNodeCluster]:
    """A head with ``head_cpus`` CPUs and a worker node per entry of ``workers`` (its CPUs)."""
    root = Path(tempfile.mkdtemp(prefix="ar-nodes-", dir="/tmp"))  # short: Ray's socket paths are limited
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_TMPDIR": str(root)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, __file__, str(root), str(head_cpus)], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the cluster did not start: {process.stderr.read()[-3000:]}")
        started = json.loads(line)
        cluster = MultiNodeCluster(process, started["address"], started["head"], env)
        for cpus in workers:
            cluster.add(cpus)
        yield cluster
    finally:
        try:
            process.stdin.close()
            process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        end_session(process.pid)
        left = session_pids(process.pid)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, "processes of the test's cluster were left running"


def _serve(root: Path, head_cpus: float) -> None:
    """The owning process: start the head, answer commands until stdin closes, then end every node."""
    import logging

    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors
    from ray_head import free_ports, worker_port_range

    logging.disable(logging.WARNING)
    names = ("gcs_server_port", "dashboard_port", "ray_client_server_port", *NODE_PORTS)
    ports = dict(zip(names, free_ports(len(names))))
    # a lost node is noticed in ~3 s rather than Ray's default ~15-30 s (health checks every second, 3 misses)
    fast = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "temp_dir": str(root / "ray"),
                                                            "include_dashboard": True, "_system_config": fast,
                                                            **ports, **worker_port_range()})
    nodes = {cluster.head_node.node_id: cluster.head_node}
    print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id}), flush=True)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if "add" in command:
                    # every port of its own too: a worker node on Ray's defaults (the agent's 52365, the metrics
                    # ports) clashes with another Ray on the machine
                    node_ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS))))
                    node = cluster.add_node(num_cpus=command["add"], **node_ports, **worker_port_range())
                    nodes[node.node_id] = node
                    answer = {"node": node.node_id}
                elif "remove" in command:
                    cluster.remove_node(nodes.pop(command["remove"]), allow_graceful=False)
                    answer = {"removed": command["remove"]}
                elif "holding" in command or "placed" in command:  # live actors of a class, or all it ever had
                    alive = "holding" in command
                    filters = [("class_name", "=", command["holding" if alive else "placed"])]
                    actors = list_actors(address=cluster.address, filters=filters + ([("state", "=", "ALIVE")]
                                                                                     if alive else []),
                                         raise_on_missing_output=False, limit=10_000)
                    answer = {"nodes": sorted({a.node_id for a in actors})}
                else:
                    answer = {"nodes": sorted(nodes)}
            except Exception as err:  # the test reads it as a failed command
                answer = {"error": f"{type(err).__name__}: {err}"}
            print(json.dumps(answer), flush=True)
    finally:
        cluster.shutdown()


# the ports every node binds (the head also binds the GCS, dashboard and client server ports)
NODE_PORTS = ("dashboard_agent_listen_port", "runtime_env_agent_port", "metrics_export_port", "metrics_agent_port",
              "node_manager_port", "object_manager_port")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # ray_head beside this file
    _serve(Path(sys.argv[1]), float(sys.argv[2]))
