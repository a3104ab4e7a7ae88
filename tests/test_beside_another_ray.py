"""Two Ray instances on one machine is ordinary use (two terminals, CI beside a developer's run). With a head of
the test's own running beside the suite's private Ray, everything Ray starts inside ours must still find ours.

The hang this guards against: Ray Train's placement-group cleaner (an actor inside our instance) asks Ray's state
API whether its controller lives; without an address that lookup scans the machine for Ray processes, found
two and crashed ("Found multiple active Ray instances"), so a trial the Tune scheduler stopped kept its CPUs and
the next trial waited forever. Seen next (in CI): Tune stopped a trial while its Train controller was restarting
the worker group; the new placement group never reached Ray Train's cleaner and held the next run's CPUs — the
study now removes such groups (``distributed/orphan_groups.py``).

The other instance is the suite's ``other_ray`` (session-scoped): it keeps running for the rest of the session,
so every test after this module runs beside it — test_study.py's module study is the second scheduler-stop study
in a row beside it, and the plain runs of test_predict.py (in this process, checked to give every CPU back),
test_compare.py, test_quickstart.py and the others run beside it too."""
from __future__ import annotations

import pytest

from autosrh_ray import workflow
from autosrh_ray.config import load_config

from .ray_head import live_placement_groups
from .test_study import STUDY


def test_the_state_api_inside_our_ray_finds_our_instance(ray_cluster, other_ray):
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self) -> int:
            return 1

    @ray.remote(num_cpus=0)
    def lookup(actor_id: str) -> str:
        from ray.util.state import get_actor  # no address: what Ray Train's cleaner does

        return get_actor(actor_id, timeout=30).state

    probe = Probe.remote()
    ray.get(probe.ping.remote())
    assert ray.get(lookup.remote(probe._actor_id.hex()), timeout=120) == "ALIVE"


@pytest.mark.slow
def test_a_study_whose_scheduler_stops_trials_finishes_beside_another_ray(ray_cluster, other_ray, tmp_path):
    # stall_timeout_s: were a trial's CPUs never freed, the run fails in minutes instead of hanging the suite;
    # one budget: the final stages after the study are not what this test is about
    config = load_config(None, [*STUDY, "prune.cr=[5]", "prune.params=null", "ray.stall_timeout_s=240"])
    report = workflow.run(config, tmp_path, log=lambda _: None)
    trials = report["study"]["trials"]
    assert any(t["stop_reason"] == "scheduler" for t in trials), trials
    assert all(t["stop_reason"] != "stalled" for t in trials), trials
    assert not live_placement_groups(ray_cluster)  # every Train run's CPUs were given back
