"""Data and outputs in an S3 bucket: a local S3-compatible server (moto's server mode, started here on a free
port) stands in for the cloud. The same workflow runs through the CLI once from a local copy of the data into a
local directory, once from ``s3://`` into ``s3://``; the reports must agree, and the bucket must hold what a run
writes (prepared data, Train runs, report, models), with nothing left in the local staging directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from autosrh_ray import storage

from .conftest import BUCKET, shared_sample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATINGS = 30_000
SMALL = ["search.K=8", "search.L=4", "search.max_epochs=3", "train.max_epochs=3", "train.batch_size=512",
         "report.reference=none", "report.plots=false", "train.shuffle_window=4096"]


def test_storage_helpers_read_write_list_and_copy_on_s3(s3_env, tmp_path):
    root = f"s3://{BUCKET}/helpers"
    storage.write_text(storage.join(root, "a", "x.txt"), "one\ntwo\nthree\n")
    storage.write_bytes(storage.join(root, "a", "y.bin"), b"\x1f\x8b")
    assert storage.is_file(f"{root}/a/x.txt") and storage.is_dir(f"{root}/a") and not storage.exists(f"{root}/b")
    assert sorted(storage.list_dir(f"{root}/a")) == ["x.txt", "y.bin"]
    assert storage.glob_files(f"{root}/a/*.txt") == [f"{root}/a/x.txt"]
    with storage.open_input(f"{root}/a/x.txt") as fh:  # seek + readline: how text inputs are cut into chunks
        fh.seek(5)
        assert fh.readline() == b"wo\n" and fh.tell() == 8
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "z.json").write_text("{}")
    storage.copy_tree(local, f"{root}/copied")
    assert storage.read_text(f"{root}/copied/sub/z.json") == "{}"
    storage.remove(f"{root}/copied")
    assert not storage.exists(f"{root}/copied/sub/z.json")
    assert storage.local_path("file:///tmp/x") == "/tmp/x" and not storage.is_uri("file:///tmp/x")


def _run(args: list[str], env: dict, cwd: Path) -> str:
    full = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "autosrh_ray", "run", *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd, env=full)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _metrics(report: dict) -> dict:
    return {k: report[k] for k in ("test", "valid", "params", "num_features", "rows", "epochs")}


@pytest.mark.slow
def test_a_run_from_and_into_a_bucket_reports_what_the_local_run_does(s3_env, tmp_path):
    lines = shared_sample("movielens/ratings.csv").read_bytes().splitlines(keepends=True)
    sample = tmp_path / "ratings.csv"
    sample.write_bytes(b"".join(lines[:1 + SAMPLE_RATINGS]))  # the header and the first ratings: what S3 changes
    fs, key = storage.resolve(f"s3://{BUCKET}/movielens/ratings.csv")  # does not depend on the table's size
    with fs.open_output_stream(key) as out:
        out.write(sample.read_bytes())
    workflow = str(ROOT / "workflows" / "movielens.yaml")

    local_out = tmp_path / "local"
    _run([workflow, "--output", str(local_out), "--set", f"dataset.path={sample}", *_sets()], s3_env, tmp_path)
    local = json.loads((local_out / "report.json").read_text())

    uri = f"s3://{BUCKET}/runs/movielens"
    staging_before = set(Path(tempfile.gettempdir()).glob("autosrh-ray-output-*"))
    stdout = _run([workflow, "--output", uri, "--set", f"dataset.path=s3://{BUCKET}/movielens/ratings.csv",
                   *_sets()], s3_env, tmp_path)
    assert f"wrote {uri}/report.json" in stdout
    remote = json.loads(storage.read_text(f"{uri}/report.json"))
    assert _metrics(remote) == _metrics(local)  # same seed, same rows: the bucket changes nothing
    for rel in ("model.pt", "dims.parquet", "config.yaml", "alpha.npy", "data/meta.json", "data/frequencies.parquet"):
        assert storage.is_file(f"{uri}/{rel}"), rel
    assert remote["artifacts"]["prepared"] == "data"
    runs = storage.list_dir(f"{uri}/ray_results")
    assert any(name.endswith("-search") for name in runs) and any("-retrain-" in name for name in runs), runs
    selector = pafs.FileSelector(f"{BUCKET}/runs/movielens/data/train", recursive=True)
    assert any(info.path.endswith(".parquet") for info in fs.get_file_info(selector))
    assert set(Path(tempfile.gettempdir()).glob("autosrh-ray-output-*")) == staging_before  # staging removed

    again = _run([workflow, "--output", uri, "--set", f"dataset.path=s3://{BUCKET}/movielens/ratings.csv",
                  *_sets()], s3_env, tmp_path)  # a re-run resumes from the bucket: data and stages reused
    assert "[prepare] reused" in again and "finished in an earlier run: reused" in again
    assert _metrics(json.loads(storage.read_text(f"{uri}/report.json"))) == _metrics(local)


def _sets() -> list[str]:
    return [arg for item in SMALL for arg in ("--set", item)]
