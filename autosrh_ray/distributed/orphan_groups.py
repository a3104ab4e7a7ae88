"""Placement groups a stopped study trial left behind, found and removed so the next trial gets their CPUs.

Seen with Ray 2.60 (tests beside another Ray instance, 2 cores): Tune stops a trial by killing its actor; the
trial's Train worker dies first, its controller's failure policy starts a new worker group — creating a new
placement group — and the controller dies before registering that group with Ray Train's placement-group
cleaner. A placement group made by a (non-detached) actor lives as long as the job, so nobody removes it: the
next trial's Ray Data tasks wait for its CPUs forever. An orphan here is a live placement group made by this job
with no live actor in it; it is removed once it has stayed so for ``grace_s`` (a worker group being started
holds its group empty for a moment, never for long).
"""
from __future__ import annotations

import time
from typing import Optional

from ..logs import Log


def _live_groups(address: str, job_id: str, unused_only: bool, spare: Optional[list] = None) -> dict[str, float]:
    """Placement groups of ``job_id`` not removed (``unused_only``: created, no live actor in them, and bundles
    other than ``spare``) → their CPUs."""
    from ray.util.state import list_actors, list_placement_groups

    groups = list_placement_groups(address=address, filters=[("state", "!=", "REMOVED")], detail=True,
                                   limit=10_000, raise_on_missing_output=False)
    used: set = set()
    if unused_only:
        actors = list_actors(address=address, filters=[("state", "!=", "DEAD")], detail=True, limit=10_000,
                             raise_on_missing_output=False)
        used = {a.placement_group_id for a in actors if getattr(a, "placement_group_id", None)}
    return {g.placement_group_id: sum(b.get("CPU", 0.0) for b in _bundles(g))
            for g in groups if g.creator_job_id == job_id and g.placement_group_id not in used
            and (not unused_only or (g.state == "CREATED" and _bundles(g) != spare))}


def _bundles(group) -> list:
    return [dict(b.get("unit_resources", {})) for b in group.bundles or []]


def _remove(group_id: str) -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))


class OrphanSweeper:
    """Call :meth:`sweep` now and then while a study runs and :meth:`sweep_after` when it has ended: it removes
    this job's placement groups that no actor has used for ``grace_s`` and says so in one line. ``spare``: the
    bundles of Tune's own trial groups (``[{"CPU": 0.01}]``), never removed while the study runs (Tune may hold
    one ready for a trial about to start)."""

    def __init__(self, log: Log, spare: list, grace_s: float = 20.0):
        self.log, self.spare, self.grace_s = log, spare, grace_s
        self._first_seen: dict[str, float] = {}
        self.removed: list[str] = []

    @staticmethod
    def _ours() -> tuple[str, str]:
        """The Ray this driver is connected to, and its job (looked up each time: a restored study pickles this)."""
        import ray

        context = ray.get_runtime_context()
        return context.gcs_address, context.get_job_id()

    def sweep(self) -> list[str]:
        """While trials run: remove orphans unused for at least ``grace_s``; the IDs removed now."""
        now = time.monotonic()
        try:
            orphans = _live_groups(*self._ours(), unused_only=True, spare=self.spare)
        except Exception as err:  # the state API is best effort: a missed sweep is retried at the next
            self.log(f"note: could not list placement groups ({type(err).__name__}: {err})")
            return []
        self._first_seen = {pg: self._first_seen.get(pg, now) for pg in orphans}
        removed = []
        for pg, cpus in orphans.items():
            unused = now - self._first_seen[pg]
            if unused >= self.grace_s:
                self._remove(pg, cpus, f"no actor in it for {unused:.0f} s")
                removed.append(pg)
        return removed

    def sweep_after(self, wait_s: float = 15.0) -> list[str]:
        """After the study (no Train run of the job is active): wait up to ``wait_s`` for Ray to remove the
        trials' placement groups, then remove those still there; the IDs removed."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                left = _live_groups(*self._ours(), unused_only=False)
            except Exception as err:
                self.log(f"note: could not list placement groups ({type(err).__name__}: {err})")
                return []
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        for pg, cpus in left.items():
            self._remove(pg, cpus, f"still there {wait_s:g} s after the study ended")
        return list(left)

    def _remove(self, group_id: str, cpus: float, why: str) -> None:
        _remove(group_id)
        self._first_seen.pop(group_id, None)
        self.removed.append(group_id)
        self.log(f"note: removed placement group {group_id[:12]}… ({cpus:g} CPU) that a stopped trial's Train run "
                 f"left behind ({why})")


def release_job_groups(wait_s: float = 10.0) -> int:
    """Remove every placement group of this job, again as new ones appear, for up to ``wait_s`` (a run given up
    after a stall: its Train workers end, its controllers fail after their retries, its CPUs are free for what
    the caller does next); how many were removed."""
    import ray

    if not ray.is_initialized():
        return 0
    address, job_id = OrphanSweeper._ours()
    removed, quiet, deadline = 0, 0, time.monotonic() + wait_s
    while time.monotonic() < deadline and quiet < 2:
        left = _live_groups(address, job_id, unused_only=False)
        for group_id in left:
            _remove(group_id)
        removed += len(left)
        quiet = 0 if left else quiet + 1
        time.sleep(1.0)
    return removed
