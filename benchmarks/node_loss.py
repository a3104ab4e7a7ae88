"""A worker node lost mid-search, again and again: does every run finish, as good, and quietly?

    python benchmarks/node_loss.py [--quick] [--tries N] [--json PATH]

A Ray cluster of a head (1 CPU) and two worker nodes (1 CPU each) on this machine (``tests/multi_node.py``:
``ray.cluster_utils.Cluster`` in a process of its own), the quickstart through the CLI with ``ray.address`` set to
it, two Train workers of 1 CPU. First one undisturbed run; then ``--tries`` runs (10; ``--quick``: 2) in each of
which the worker node holding a Train worker is killed at once (not gracefully: a lost host) after the search's
second evaluation, and a node of 1 CPU joins in its place. Per try: whether it finished (exit 0), its test AUC
against the undisturbed run's, seconds from the loss to the run's "[ray] lost node" line and to the search's
"resumed from its checkpoint" line, its wall time, and whether the terminal showed a traceback or a Ray state
dump. Prints one flat JSON object (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.multi_node import CliRun, multi_node_cluster  # noqa: E402

SETTINGS = ["dataset.synthetic.rows=40000", "report.reference=none", "report.plots=false", "search.max_epochs=8",
            "search.patience=8", "train.max_epochs=4", "ray.num_workers=2", "ray.cpus_per_worker=1",
            "ray.max_failures=2", "ray.stall_timeout_s=120"]
KILL_AFTER = "[search] epoch 1:"


def _test_auc(output: Path) -> float:
    return json.loads((output / "report.json").read_text())["test"]["auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tries (a few minutes)")
    parser.add_argument("--tries", type=int, default=None, help="tries with a node lost (default 10, --quick 2)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    tries = args.tries or (2 if args.quick else 10)
    workflow = str(ROOT / "workflows" / "quickstart.yaml")
    base = Path(tempfile.mkdtemp(prefix="node-loss-"))
    rows = []
    with multi_node_cluster(head_cpus=1, workers=(1, 1)) as cluster:
        calm = CliRun(cluster, workflow, str(base / "calm"), *SETTINGS, f"ray.storage_path={base / 'ray-calm'}")
        if calm.rc != 0:
            raise SystemExit(f"the undisturbed run failed:\n{calm.text()[-3000:]}")
        reference = _test_auc(base / "calm")
        for t in range(tries):
            out = base / f"try{t}"
            run = CliRun(cluster, workflow, str(out), *SETTINGS, f"ray.storage_path={base / f'ray{t}'}",
                         kill_at=(KILL_AFTER,))  # storage of its own: nothing to resume from the runs before
            finished = run.rc == 0 and (out / "report.json").is_file()
            loss = run.losses[0] if run.losses else None
            row = {"finished": finished, "killed": loss is not None,
                   "auc_delta": _test_auc(out) - reference if finished else None,
                   "lost_s": loss.lost_s if loss else None, "resumed_s": loss.resumed_s if loss else None,
                   "wall_s": run.seconds,
                   "traceback": "Traceback" in run.text(), "state_dump": "[state-dump]" in run.text()}
            rows.append(row)
            print(json.dumps({"try": t, **row}), flush=True)
            if not finished:
                print(run.text()[-3000:], file=sys.stderr)
    deltas = [abs(r["auc_delta"]) for r in rows if r["auc_delta"] is not None]
    resumed = [r["resumed_s"] for r in rows if r["resumed_s"] is not None]
    lost = [r["lost_s"] for r in rows if r["lost_s"] is not None]
    figures = {
        "tries": tries, "killed": sum(r["killed"] for r in rows), "finished": sum(r["finished"] for r in rows),
        "within_0_01_auc": sum(d < 0.01 for d in deltas), "max_abs_auc_delta": max(deltas, default=None),
        "undisturbed_test_auc": reference, "undisturbed_wall_s": calm.seconds,
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "median_lost_line_s": statistics.median(lost) if lost else None,
        "median_resumed_line_s": statistics.median(resumed) if resumed else None,
        "tracebacks": sum(r["traceback"] for r in rows), "state_dumps": sum(r["state_dump"] for r in rows),
        "ratio_median_wall_to_undisturbed": statistics.median(r["wall_s"] for r in rows) / calm.seconds,
    }
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
