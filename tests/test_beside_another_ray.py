"""Two Ray instances on one machine is ordinary use (two terminals, CI beside a developer's run). With a head of
the test's own running beside the suite's private Ray, everything Ray starts inside ours must still find ours.

The hang this guards against: Ray Train's placement-group cleaner (an actor inside our instance) asks Ray's state
API whether its controller lives; without an address that lookup scans the machine for Ray processes, found
two and crashed ("Found multiple active Ray instances"), so a trial the Tune scheduler stopped kept its CPUs and
the next trial waited forever. Seen next (in CI): Tune stopped a trial while its Train controller was restarting
the worker group; the new placement group never reached Ray Train's cleaner and held the next run's CPUs — the
study now removes such groups (``distributed/orphan_groups.py``).

The other instance is the suite's ``other_ray`` (session-scoped): it keeps running for the rest of the session,
so every test after this module runs beside it — test_study.py's module study (a scheduler-stop study, checked
to finish with no stalled trial and to give every placement group back) and the plain runs of test_predict.py
(in this process, checked to give every CPU back), test_compare.py, test_quickstart.py and the others."""
from __future__ import annotations


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
