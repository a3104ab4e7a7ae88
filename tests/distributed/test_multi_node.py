"""A run on a Ray cluster of several nodes (``tests/multi_node.py``: ``ray.cluster_utils.Cluster`` in a process of
its own, beside the suite's private Ray and its other instance), through the CLI as a user runs it
(``ray.address`` set to the cluster):

* two Train workers on two nodes give the metrics two workers on one node give;
* a worker node holding a Train worker lost mid-search, or mid-retrain, with a node joining in its place: the run
  finishes from its last checkpoint within the resume tests' tolerance of the undisturbed run, and the terminal
  says in one line each that the node was lost and where the stage resumed — no traceback, no Ray state dump;
* lost with none joining: the restarted workers cannot all be fed (the node's CPU is gone), and the run stops
  with one line saying what it waits for;
* lost during ``prepare``: Ray Data's tasks are retried elsewhere and the prepared set is the undisturbed one's.

The run's own helpers (the live lines' queue, the statistics shards) live on the driver's node, so a worker node's
loss never takes them along. One multi-node run writes its output and Train storage to S3 (moto's server)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..multi_node import CliRun, MultiNodeCluster, multi_node_cluster
from ..conftest import BUCKET

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# small, but stages of 20 evaluations of ~0.3 s: a loss after the second one lands while the stage still runs
# (Ray Train notices a dead worker within its 2-s health check; a stage that ended by then has nothing to restart)
TINY = ["dataset.synthetic.rows=16000", "train.batch_size=256", "report.reference=none", "report.plots=false",
        "search.max_epochs=20", "search.patience=20", "train.max_epochs=20", "train.patience=20",
        "ray.num_workers=2", "ray.cpus_per_worker=1", "ray.max_failures=2", "ray.stall_timeout_s=120"]
SEARCH_LINE = "[search] epoch 1:"  # killed after the search's second evaluation (its checkpoint is written)
RETRAIN_LINE = "[retrain cr10] epoch 1:"
# how long the run waits for the lost CPU before it stops; the clock also runs while the stage starts, on nodes
# that joined in the test before (fresh worker processes import torch there): 25 s was once too short (2026-12-08,
# the whole suite on 2 cores: no rows within 25 s of the Train run's start, before any node was lost)
NONE_JOINING_STALL_S = 45
RESUME_TOLERANCE = 0.01  # test AUC against the undisturbed run (a resumed run replays the same batches; α's and
# the optimisers' state come back from the checkpoint, the few steps after it are retrained)


def Terminal(cluster: MultiNodeCluster, output: str, *overrides: str, **options) -> CliRun:
    """The quickstart through the CLI on the cluster, with the tests' small settings and ``overrides``."""
    return CliRun(cluster, str(ROOT / "workflows" / "quickstart.yaml"), output, *TINY, *overrides, **options)


def report(output: str) -> dict:
    from autosrh_ray import storage

    return json.loads(storage.read_text(storage.join(output, "report.json")))


@pytest.fixture(scope="module")
def cluster(s3_env, other_ray):
    """A head (1 CPU: the driver's node) and a worker node of 2 CPUs (then nodes of 1 CPU each); started after
    the S3 server, so every node's processes have its endpoint, and beside the suite's other Ray instance."""
    with multi_node_cluster(head_cpus=1, workers=(2,)) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def undisturbed(cluster, tmp_path_factory):
    """The same run with both Train workers on one node (a 2-CPU worker node), then on two (1 CPU each) with its
    output and Train storage on S3."""
    base = tmp_path_factory.mktemp("nodes")
    one = Terminal(cluster, str(base / "one-node"), f"ray.storage_path={base / 'ray'}")
    assert one.rc == 0, one.text()[-3000:]
    placed_one = cluster.ask(placed="RayTrainWorker")["nodes"]
    (big,) = [n for n in cluster.ask(nodes=True)["nodes"] if n != cluster.head]
    cluster.remove(big)
    cluster.add(1)
    cluster.add(1)
    output = f"s3://{BUCKET}/nodes/two-nodes"
    two = Terminal(cluster, output, f"ray.storage_path=s3://{BUCKET}/nodes/ray")
    assert two.rc == 0, two.text()[-3000:]
    placed_two = [n for n in cluster.ask(placed="RayTrainWorker")["nodes"] if n not in placed_one]
    return dict(base=base, one=one, two=two, one_report=report(str(base / "one-node")), two_report=report(output),
                placed_one=placed_one, placed_two=placed_two)


def assert_quiet(terminal: Terminal) -> None:
    text = terminal.text()
    assert "Traceback" not in text and "[state-dump]" not in text and "(raylet)" not in text, text[-3000:]


def test_two_train_workers_on_two_nodes_give_the_metrics_of_two_on_one(undisturbed):
    one, two = undisturbed["one_report"], undisturbed["two_report"]
    assert len(undisturbed["placed_one"]) == 1 and len(undisturbed["placed_two"]) == 2
    for split in ("valid", "test"):
        for key, value in one[split].items():
            assert two[split][key] == pytest.approx(value, abs=1e-6), (split, key)
    assert two["params"] == one["params"]
    for stage, summary in one["stages"].items():
        assert {k: two["stages"][stage][k] for k in ("epochs", "steps", "best_epoch", "stop_reason")} == \
            {k: summary[k] for k in ("epochs", "steps", "best_epoch", "stop_reason")}, stage
    assert_quiet(undisturbed["one"])
    assert_quiet(undisturbed["two"])


def test_a_worker_node_lost_mid_search_and_another_mid_retrain_the_run_finishes_from_its_checkpoints(
        cluster, undisturbed, tmp_path):
    """Two losses in one run (ray.max_failures: 2), each with a node joining in its place."""
    run = Terminal(cluster, str(tmp_path / "out"), f"ray.storage_path={tmp_path / 'ray'}",
                   kill_at=(SEARCH_LINE, RETRAIN_LINE))
    assert [loss.after for loss in run.losses] == [SEARCH_LINE, RETRAIN_LINE] and run.rc == 0, run.text()[-3000:]
    assert_quiet(run)
    lost = [x for x in run.lines if x.startswith("[ray] lost node")]
    resumed = [x for x in run.lines if " resumed from its checkpoint after evaluation " in x]
    assert len(lost) == 2 and [x.split("]")[0] for x in resumed] == ["[search", "[retrain cr10"], run.text()[-3000:]
    for loss, lost_line, resumed_line in zip(run.losses, lost, resumed):  # each said in order, after its loss
        after = run.lines.index(next(x for x in run.lines if loss.after in x))
        assert after < run.lines.index(lost_line) < run.lines.index(resumed_line)
        assert loss.lost_s is not None and loss.resumed_s is not None
    got, expected = report(str(tmp_path / "out")), undisturbed["one_report"]
    assert abs(got["test"]["auc"] - expected["test"]["auc"]) < RESUME_TOLERANCE
    assert got["params"] == expected["params"]
    print(f"\nlosses: {[(loss.after, round(loss.lost_s, 1), round(loss.resumed_s, 1)) for loss in run.losses]}; "
          f"run {run.seconds:.0f} s against {undisturbed['two'].seconds:.0f} s undisturbed; test auc "
          f"{got['test']['auc']:.5f} against {expected['test']['auc']:.5f}")


def test_a_worker_node_lost_with_none_joining_stops_with_one_line_saying_what_it_waits_for(cluster, tmp_path):
    run = Terminal(cluster, str(tmp_path / "out"), f"ray.storage_path={tmp_path / 'ray'}",
                   f"ray.stall_timeout_s={NONE_JOINING_STALL_S}",
                   kill_at=(SEARCH_LINE,), replace=False)
    print(f"\nnone joining: stopped {run.seconds:.0f} s after it began: {run.lines[-1][:160]}")
    try:
        assert run.losses and run.rc == 3, run.text()[-3000:]
        assert_quiet(run)
        assert any(x.startswith("[ray] lost node") for x in run.lines)
        error = run.lines[-1]
        assert error.startswith("autosrh-ray: error: [search]"), error
        assert f"reported nothing for {NONE_JOINING_STALL_S} s" in error, error
        assert "cluster free" in error, error
    finally:
        cluster.add(1)  # the cluster as the other tests found it


def test_a_worker_node_lost_during_prepare_leaves_the_prepared_set_whole(cluster, undisturbed, tmp_path):
    prepared = Terminal(cluster, str(tmp_path / "out"), "dataset.synthetic.rows=400000", command="prepare",
                        kill_at=("[prepare] ",))
    assert prepared.losses, prepared.text()[-3000:]
    assert_quiet(prepared)
    meta = tmp_path / "out" / "meta.json"
    print(f"\nprepare with a node lost: exit {prepared.rc} in {prepared.seconds:.0f} s")
    if prepared.rc == 0:  # Ray Data retried the lost node's tasks on the nodes left
        rows = json.loads(meta.read_text())["rows"]
        assert rows["read"] == 400_000 == rows["train"] + rows["valid"] + rows["test"]
    else:  # or it stopped: one line, and no prepared set a later run could take for whole
        assert len([x for x in prepared.lines if x.startswith("autosrh-ray: error:")]) == 1 and not meta.exists()
    cluster.add(1)



PATHS_PROBE = r'''
import sys
from pathlib import Path

import ray

from autosrh_ray.config import ConfigError
from autosrh_ray.distributed.shared_paths import check_shared_paths

base = Path(sys.argv[1])
ray.init(address=sys.argv[2], logging_level="ERROR")
(base / "data.txt").write_text("x")
print("checked", check_shared_paths({"dataset.path": str(base / "data.txt")}, {"--output": str(base / "out")}))
print("markers left", len(list((base / "out").iterdir())))
for inputs, outputs in (({}, {"--output": "runs/quickstart"}),
                        ({"dataset.path": str(base / "missing.txt")}, {"--output": str(base / "out")})):
    try:
        check_shared_paths(inputs, outputs)
        print("no error")
    except ConfigError as err:
        print("error", err)
ray.shutdown()
'''


def test_paths_are_checked_from_every_node(cluster, tmp_path):
    """Before any work, every path a run reads or writes is absolute and seen from every node (a marker the
    driver writes into each output directory, looked for by a task pinned to each node, then removed)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PATHS_PROBE, str(tmp_path), cluster.address], capture_output=True,
                          text=True, timeout=300, env=cluster.env)
    assert done.returncode == 0, done.stderr[-3000:]
    nodes = len(cluster.ask(nodes=True)["nodes"])
    lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("checked", "markers", "error", "no")]
    assert lines[0] == f"checked {nodes}" and nodes >= 2 and lines[1] == "markers left 0"
    assert lines[2].startswith(f"error --output: 'runs/quickstart' is relative: on a cluster of {nodes} nodes")
    assert lines[3].startswith("error dataset.path: ") and "is not visible from node" in lines[3]
