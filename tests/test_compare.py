"""``autosrh-ray compare`` end to end on a small synthetic table (in-process training, ``ray.num_workers: 0``):
every method × seed is a workflow run under DIR/<method>/seed<k>, the comparison lists each with its metrics,
params, bytes and times, summarises mean ± std, plots quality against embedding bytes, and a re-run reads finished runs
back instead of training again."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALL = ("autosrh", "uniform", "magnitude", "grid", "random", "mde", "autodim", "autoemb", "pep")
SMALL = ["ray.num_workers=0", "dataset.synthetic.rows=10000", "search.K=8", "search.L=4", "train.batch_size=512",
         "search.random_trials=2", "search.grid_K=[1,2,8]", "search.autodim_candidates=[2,8]",
         "search.autoemb_candidates=[2,8]", "search.pep_l2=0.01"]


def _compare(output: Path, methods: str, seeds: int) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "autosrh_ray", "compare", str(ROOT / "workflows" / "quickstart.yaml"),
            "--methods", methods, "--seeds", str(seeds), "--output", str(output)]
    for item in SMALL:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=output.parent)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    done = _compare(out, ",".join(ALL), 2)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, json.loads((out / "comparison.json").read_text()), done.stdout


@pytest.mark.slow
def test_every_method_and_seed_is_a_run_with_metrics_params_and_times(comparison):
    out, result, _ = comparison
    runs = result["runs"]
    assert sorted({(r["method"], r["seed"]) for r in runs}) == sorted((m, s) for m in ALL for s in (0, 1))
    for r in runs:
        assert (out / r["method"] / f"seed{r['seed']}" / "report.json").is_file()
        assert set(r["test"]) == {"auc", "logloss"} and 0.5 < r["test"]["auc"] < 1
        assert r["params"]["kept"] > 0 and r["timings_s"]["retrain"] > 0
        assert r["cr_achieved"] == pytest.approx(r["params"]["uniform"] / r["params"]["kept"])
    by = {(r["method"], r["seed"]): r for r in runs}
    assert by[("mde", 0)]["params"]["projection"] > 0 and by[("random", 0)]["params"]["projection"] == 0
    assert by[("autodim", 0)]["budget"] == by[("autoemb", 0)]["budget"] == "searched"  # no budget: their own size
    assert by[("pep", 0)]["params"]["kept"] == by[("autosrh", 0)]["params"]["kept"]  # PEP meets the budget exactly
    # bytes counted alike, from each artifact: MDE's projections are part of its embedding bytes
    import torch

    from autosrh_ray.artifact.format import tensor_bytes

    stored = torch.load(out / "mde" / "seed0" / "model.pt", weights_only=True)
    assert by[("mde", 0)]["bytes"]["embedding"] == tensor_bytes([stored["embedding"], stored["projection"]])
    assert all(r["bytes"]["bytes_cr"] == pytest.approx(r["bytes"]["dense_fp32"] / r["bytes"]["embedding"]) for r in runs)
    assert by[("autosrh", 0)]["test"] != by[("autosrh", 1)]["test"]  # the seeds are different runs
    grid = by[("grid", 0)]
    assert [c["name"] for c in grid["candidates"]] == ["K1", "K2", "K8"]
    assert all("test" in c for c in grid["candidates"])  # every K' a point of its own
    assert sorted(c["bytes"] for c in grid["candidates"]) == [c["bytes"] for c in grid["candidates"]]  # its own size


def test_summary_table_and_plot(comparison):
    out, result, stdout = comparison
    summary = {(e["method"], e["budget"]): e for e in result["summary"]}
    runs = [r for r in result["runs"] if r["method"] == "magnitude"]
    mean = sum(r["test"]["auc"] for r in runs) / len(runs)
    assert summary[("magnitude", "cr10")]["test_auc"]["mean"] == pytest.approx(mean)
    assert summary[("uniform", "uniform")]["seeds"] == 2
    text = (out / "comparison.md").read_text()
    assert "| autosrh | cr10 | 0." in text and "| mde | cr10 |" in text and " ± " in text
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote " in stdout


def test_a_rerun_reads_finished_runs_back(comparison):
    out, result, _ = comparison
    again = _compare(out, "uniform,mde", 2)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished in an earlier run") == 4 and "epoch" not in again.stdout
    assert [r["test"] for r in json.loads((out / "comparison.json").read_text())["runs"]] == \
        [r["test"] for r in result["runs"] if r["method"] in ("uniform", "mde")]


def test_an_unknown_method_is_a_one_line_error(tmp_path):
    done = _compare(tmp_path / "x", "autosrh,pepp", 1)
    assert done.returncode == 2 and "--methods: unknown method 'pepp'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
