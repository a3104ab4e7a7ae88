"""On a cluster of more than one node, every path a run reads or writes must be the same place on every node.

A relative path, or an absolute one that only the driver's node has (its local disk, ``/tmp``), would make
workers read nothing or write where nobody looks — found only hours later. Before any work starts,
:func:`check_shared_paths` asks every alive node, in a zero-CPU task pinned to it, whether it sees the input and
a marker file the driver has just written into each output directory; a path that fails is a one-line
:class:`~autosrh_ray.config.ConfigError` naming its key and the node. A single node may use any local path.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..config import ConfigError


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _sees(paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


def check_shared_paths(inputs: dict[str, str], outputs: dict[str, str]) -> int:
    """Check ``inputs`` (key → path that must exist) and ``outputs`` (key → directory, created here) from every
    node when the cluster has more than one; returns the number of nodes checked (0: a single node)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    if len(nodes) <= 1:
        return 0
    for key, path in {**inputs, **outputs}.items():
        if not os.path.isabs(path):
            raise ConfigError(key, f"{path!r} is relative: on a cluster of {len(nodes)} nodes give an absolute path "
                                   "on storage every node mounts at the same place")
    probes: dict[str, str] = dict(inputs)
    markers = []
    for key, directory in outputs.items():
        Path(directory).mkdir(parents=True, exist_ok=True)
        marker = Path(directory) / f".autosrh-shared-{uuid.uuid4().hex}"
        marker.write_text("written by the driver; every node must see it\n")
        markers.append(marker)
        probes[key] = str(marker)
    try:
        task = ray.remote(num_cpus=0)(_sees)
        keys, paths = list(probes), list(probes.values())
        answers = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                           .remote(paths) for n in nodes])
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    for node, seen in zip(nodes, answers):
        for key, path, ok in zip(keys, paths, seen):
            if not ok:
                shown = inputs.get(key) or outputs[key]
                raise ConfigError(key, f"{shown!r} is not visible from node {node['NodeManagerAddress']}: on a "
                                       "cluster of several nodes use storage every node mounts at the same path")
    return len(nodes)
