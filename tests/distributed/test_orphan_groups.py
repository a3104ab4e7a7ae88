"""Placement groups a stopped trial's Train run left behind are found and removed — and nothing else is: a group
with an actor in it, one of Tune's trial groups, one not yet unused for the grace period."""
from __future__ import annotations

import time

import pytest

from autosrh_ray.distributed.orphan_groups import OrphanSweeper, release_job_groups


def _state(ray, group) -> str:
    return ray.util.placement_group_table(group)["state"]


@pytest.fixture
def groups(ray_cluster):
    made = []

    def make(cpus: float):
        group = ray_cluster.util.placement_group([{"CPU": cpus}])
        ray_cluster.get(group.ready(), timeout=60)
        made.append(group)
        return group

    yield make
    for group in made:
        if _state(ray_cluster, group) != "REMOVED":
            ray_cluster.util.remove_placement_group(group)


def test_an_unused_group_is_removed_after_the_grace_period_and_a_used_or_spared_one_is_kept(ray_cluster, groups):
    ray = ray_cluster
    orphan, used, trials = groups(0.25), groups(0.2), groups(0.01)

    @ray.remote(num_cpus=0.2)
    class Holder:
        def ping(self) -> int:
            return 1

    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    holder = Holder.options(scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=used)).remote()
    ray.get(holder.ping.remote(), timeout=60)
    lines: list[str] = []
    sweeper = OrphanSweeper(lines.append, spare=[{"CPU": 0.01}], grace_s=2.0)
    assert sweeper.sweep() == []  # first seen now: not yet
    assert _state(ray, orphan) == "CREATED"
    time.sleep(2.5)
    assert sweeper.sweep() == [orphan.id.hex()]
    assert _state(ray, orphan) == "REMOVED"
    assert _state(ray, used) == "CREATED" and _state(ray, trials) == "CREATED"
    assert len(lines) == 1 and "0.25 CPU" in lines[0], lines
    ray.kill(holder)


def test_after_the_study_every_group_left_is_removed(ray_cluster, groups):
    first, second = groups(0.25), groups(0.01)
    lines: list[str] = []
    assert sorted(OrphanSweeper(lines.append, spare=[]).sweep_after(wait_s=1.0)) == sorted(
        [first.id.hex(), second.id.hex()])
    assert _state(ray_cluster, first) == "REMOVED" and _state(ray_cluster, second) == "REMOVED"
    assert len(lines) == 2


def test_a_given_up_run_gives_its_groups_back(ray_cluster, groups):
    group = groups(0.5)
    assert release_job_groups(wait_s=5.0) >= 1
    assert _state(ray_cluster, group) == "REMOVED"
