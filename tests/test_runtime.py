"""Which Ray a run attaches to: ``local`` starts a private one (never another user's cluster on the machine),
except inside a Ray job (``RAY_ADDRESS`` set), where it attaches to the job's cluster."""
from autosrh_ray.runtime import init_address


def test_local_starts_a_private_ray_outside_a_job():
    assert init_address("local", {}) == "local"
    assert init_address("", {}) == "local"


def test_local_inside_a_ray_job_attaches_to_the_jobs_cluster():
    assert init_address("local", {"RAY_ADDRESS": "http://127.0.0.1:8265"}) is None  # ray.init reads RAY_ADDRESS


def test_auto_and_explicit_addresses_are_passed_through():
    assert init_address("auto", {}) == "auto"
    assert init_address("ray://head:10001", {"RAY_ADDRESS": "x"}) == "ray://head:10001"
