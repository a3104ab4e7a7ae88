"""CPU budgets that cannot deadlock: a Train run's workers never take the CPUs its Ray Data tasks need, whole
machine or a study trial's share of it."""
import pytest

from autosrh_ray.config import RayConfig, load_config
from autosrh_ray.distributed.resources import plan_resources
from autosrh_ray.study import TRIAL_CPU, concurrency


@pytest.mark.parametrize("cpus, workers", [(2.0, 1), (2.0, 2), (0.99, 1), (16.0, 4), (1.5, 1)])
def test_workers_and_ray_data_fit_and_a_data_task_fits_its_budget(cpus, workers):
    plan = plan_resources(RayConfig(num_workers=workers), cpus)
    assert plan.num_workers * plan.cpus_per_worker + plan.data_cpus <= cpus + 1e-9
    assert 0 < plan.data_task_cpus <= plan.data_cpus  # one Ray Data task can always run beside the workers
    assert plan.torch_threads >= 1


def test_two_trials_side_by_side_on_two_cpus_do_not_overcommit():
    assert concurrency(load_config(), 2.0) == 1 and concurrency(load_config(), 16.0) == 8
    config = load_config(overrides=["tune.max_concurrent_trials=2"])
    parallel = concurrency(config, 2.0)
    assert parallel == 2
    share = 2.0 / parallel - TRIAL_CPU
    plan = plan_resources(config.ray, share)
    per_trial = TRIAL_CPU + plan.num_workers * plan.cpus_per_worker + plan.data_cpus
    assert parallel * per_trial <= 2.0 + 1e-9
