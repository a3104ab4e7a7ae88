"""Connecting to Ray and budgeting CPUs between Train workers and Ray Data, so small machines never deadlock.

Seen on a 2-core machine: two Train workers holding one CPU each left Ray Data's read tasks (one CPU each)
unschedulable and the run hung. The plan below always leaves ``data_cpus`` outside the workers' reservation,
caps Ray Data's executor at it, and sizes each Ray Data task to fit in it (``data_task_cpus``: one CPU, or the
whole budget when it is smaller — a study trial's share of a small machine):

    CPUs ── data_cpus (Ray Data; ≥ 1, or half the CPUs below 2) ── num_workers × cpus_per_worker (fractional)

Each worker sets ``torch.set_num_threads(torch_threads)``, the whole CPUs it holds (at least 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..config import ConfigError, RayConfig


@dataclass(frozen=True)
class ResourcePlan:
    """Resources of one Train run: per worker, and the CPU budget left to Ray Data."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus: float
    torch_threads: int

    @property
    def data_task_cpus(self) -> float:
        """CPUs each Ray Data task requests: one, or the whole (fractional) Ray Data budget if smaller."""
        return min(1.0, self.data_cpus)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def side_by_side(self, cluster_cpus: float) -> int:
        """How many Train runs of this plan (workers + their Ray Data budget) fit in the cluster at once."""
        return max(1, int(cluster_cpus // (self.num_workers * self.cpus_per_worker + self.data_cpus)))

    def resources_per_worker(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return res


def plan_resources(ray_config: RayConfig, cluster_cpus: float) -> ResourcePlan:
    """Split ``cluster_cpus`` between the workers and Ray Data; one-line :class:`ConfigError` if it cannot fit.

    Defaults: ``data_cpus`` = max(1, cluster/8) (whole CPUs), or half of fewer than 2 CPUs (a study trial's
    share); ``cpus_per_worker`` = the rest divided evenly, rounded down to a whole number when ≥ 1, else to 1/100
    (fractional CPUs keep 2 workers + Ray Data on 2 cores).
    """
    w = ray_config.num_workers
    data = ray_config.data_cpus
    if data is None:
        data = float(max(1, math.floor(cluster_cpus / 8))) if cluster_cpus >= 2 else cluster_cpus / 2
    elif data <= 0:
        raise ConfigError("ray.data_cpus", f"must be > 0 (got {data})")
    per = ray_config.cpus_per_worker
    if per is None:
        share = (cluster_cpus - data) / w
        per = float(math.floor(share)) if share >= 1 else math.floor(share * 100) / 100
        if per <= 0:
            raise ConfigError("ray.num_workers", f"{w} workers and {data:g} Ray Data CPUs do not fit in "
                                                 f"{cluster_cpus:g} cluster CPUs; lower ray.num_workers or ray.data_cpus")
    elif per <= 0:
        raise ConfigError("ray.cpus_per_worker", f"must be > 0 (got {per})")
    elif per * w + data > cluster_cpus + 1e-9:
        raise ConfigError("ray.cpus_per_worker", f"{w} workers x {per:g} CPUs + {data:g} Ray Data CPUs exceed the "
                                                 f"{cluster_cpus:g} cluster CPUs (would deadlock Ray Data)")
    gpus = ray_config.gpus_per_worker
    if gpus < 0:
        raise ConfigError("ray.gpus_per_worker", f"must be >= 0 (got {gpus})")
    return ResourcePlan(w, per, gpus, data, max(1, int(per)))


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def set_torch_threads(threads: int) -> None:
    """Match torch's intra-op threads to the CPUs this worker holds."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def data_execution_options(plan: ResourcePlan, preserve_order: bool = False):
    """Ray Data executor options capped at the plan's Ray Data CPU budget."""
    from ray.data import ExecutionOptions, ExecutionResources

    return ExecutionOptions(resource_limits=ExecutionResources(cpu=plan.data_cpus), preserve_order=preserve_order)


def describe(plan: ResourcePlan, cluster: Optional[float] = None) -> str:
    total = f" of {cluster:g}" if cluster is not None else ""
    return (f"{plan.num_workers} workers x {plan.cpus_per_worker:g} CPU (torch threads {plan.torch_threads})"
            f"{', ' + format(plan.gpus_per_worker, 'g') + ' GPU' if plan.use_gpu else ''}, "
            f"Ray Data {plan.data_cpus:g} CPU{total}")
