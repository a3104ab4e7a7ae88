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


NOTE_PROBE = """
import ray
from autosrh_ray.runtime import caller_ray_note, start_local
if {own}:
    start_local(num_cpus=1, include_dashboard=False)
else:
    ray.init(address="local", num_cpus=1, include_dashboard=False)  # a notebook's ray.init(): no RAY_ADDRESS
print("NOTE:", caller_ray_note())
"""


def test_a_run_on_a_ray_the_caller_started_says_what_to_do_when_another_ray_runs_beside(other_ray, tmp_path):
    """A Ray the caller started without ``RAY_ADDRESS`` leaves Ray's helpers in it to scan the machine: the run
    says so in one line, naming what to start instead; a Ray started by ``start_local`` needs no note."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    notes = {}
    for own in (False, True):
        done = subprocess.run([sys.executable, "-c", NOTE_PROBE.format(own=own)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        (line,) = [x for x in done.stdout.splitlines() if x.startswith("NOTE:")]
        notes[own] = line.removeprefix("NOTE: ")
    assert notes[True] == "None"
    assert notes[False].startswith("note: this Ray was started without RAY_ADDRESS while another Ray runs")
    assert f":{other_ray['gcs_port']}" in notes[False] and "start_local()" in notes[False]
