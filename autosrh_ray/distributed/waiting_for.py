"""What a stalled Ray run waits for, in one line: pending tasks and actors with the resources they ask for, the
placement groups that hold or want CPUs, and the cluster's free resources (Ray's state API, at our instance's
address; the state API needs the dashboard, which the workflow's local Ray includes)."""
from __future__ import annotations

from collections import Counter

STATE_TIMEOUT_S = 10


def _resources(amounts: dict) -> str:
    """``{CPU: 1, GPU: 1}`` (Ray's internal per-node and bundle-index resources left out)."""
    shown = {k: v for k, v in amounts.items() if v and "_group_" not in k and not k.startswith("node:")}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def _pending(address: str) -> str:
    from ray.util.state import list_actors, list_tasks

    demand: Counter = Counter()
    for task in list_tasks(address=address, filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")],
                           timeout=STATE_TIMEOUT_S, raise_on_missing_output=False):
        demand[(task.name, _resources(task.required_resources or {}))] += 1
    for actor in list_actors(address=address, filters=[("state", "=", "PENDING_CREATION")],
                             timeout=STATE_TIMEOUT_S, raise_on_missing_output=False):
        demand[(actor.class_name, _resources(getattr(actor, "required_resources", None) or {}))] += 1
    if not demand:
        return "no pending task or actor"
    return "pending " + ", ".join(f"{n} × {name} {res}" for (name, res), n in demand.most_common(5))


def _placement_groups(address: str) -> str:
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(address=address, filters=[("state", "!=", "REMOVED")], detail=True,
                                   timeout=STATE_TIMEOUT_S, raise_on_missing_output=False)
    if not groups:
        return "no placement group"
    by_state: dict[str, tuple[int, Counter]] = {}
    for group in groups:
        count, held = by_state.get(group.state, (0, Counter()))
        for bundle in group.bundles or []:
            held.update(bundle.get("unit_resources", {}))
        by_state[group.state] = (count + 1, held)
    return "placement groups: " + ", ".join(f"{n} {state} {_resources(held)}"
                                            for state, (n, held) in sorted(by_state.items()))


def ray_waiting_for() -> str:
    """One line on what our Ray waits for ("" when Ray is not running); never raises."""
    import ray

    if not ray.is_initialized():
        return ""
    parts = []
    try:
        address = ray.get_runtime_context().gcs_address
        for describe in (_placement_groups, _pending):
            parts.append(describe(address))
        free, total = ray.available_resources(), ray.cluster_resources()
        kinds = ("CPU", "GPU")
        parts.append(f"cluster free {_resources({k: free.get(k, 0.0) for k in kinds if k in total})} of "
                     f"{_resources({k: v for k, v in total.items() if k in kinds})}")
    except Exception as err:  # a diagnosis must never hide the stall itself
        parts.append(f"(Ray's state API did not answer: {type(err).__name__})")
    return "; ".join(parts)
