"""A killed worker's local checkpoint directory is removed by the next worker on the node — only once its worker
is gone and it is old enough; a live worker's, a fresh one and unrelated directories stay."""
import os
import subprocess
import sys
import time

from autosrh_ray.distributed import local_checkpoints


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _aged(path, seconds):
    path.mkdir()
    (path / "state.pt").write_bytes(b"x" * 10)
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_removes_only_old_directories_of_workers_that_are_gone(tmp_path):
    dead = _dead_pid()
    prefix = local_checkpoints.PREFIX
    orphan = _aged(tmp_path / f"{prefix}{dead}-abc", 7200)
    fresh_orphan = _aged(tmp_path / f"{prefix}{dead}-def", 10)
    live = _aged(tmp_path / f"{prefix}{os.getpid()}-ghi", 7200)
    unnamed = _aged(tmp_path / f"{prefix}x1y2z3", 7200)  # an older name without a PID: not ours to judge
    other = _aged(tmp_path / "something-else", 7200)

    assert local_checkpoints.remove_orphans(tmp_path, min_age_s=3600) == 1
    assert not orphan.exists()
    assert all(p.exists() for p in (fresh_orphan, live, unnamed, other))
    assert local_checkpoints.remove_orphans(tmp_path, min_age_s=0) == 1  # the fresh one once old enough
    assert not fresh_orphan.exists() and live.exists()


def test_new_directory_carries_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    made = local_checkpoints.new_directory()
    assert made.parent == tmp_path and made.name.startswith(f"{local_checkpoints.PREFIX}{os.getpid()}-")
    assert local_checkpoints.remove_orphans(tmp_path, min_age_s=0) == 0 and made.exists()


def test_by_default_only_directories_older_than_an_upload_could_take_are_removed(tmp_path):
    """What the worker's start calls (no ``min_age_s``): a gone worker's directory written seconds or minutes ago
    may still be uploading (or belong to a PID of another namespace) and stays; one a day old is removed."""
    dead = _dead_pid()
    prefix = local_checkpoints.PREFIX
    just_written = _aged(tmp_path / f"{prefix}{dead}-new", 0)
    minutes_old = _aged(tmp_path / f"{prefix}{dead}-min", 300)
    day_old = _aged(tmp_path / f"{prefix}{dead}-day", 86_400)

    assert local_checkpoints.remove_orphans(tmp_path) == 1
    assert not day_old.exists()
    assert just_written.exists() and minutes_old.exists()
