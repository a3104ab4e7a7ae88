"""Bad input as the user's terminal shows it: ``autosrh-ray`` run as a subprocess (Ray's and Ray Data's own log
handlers write to the terminal they were created with, which no in-process capture sees), its whole stdout and
stderr read together — at most two lines (a progress line, then the error), the file (and line) or key named, no
traceback, a non-zero exit."""
from __future__ import annotations

import gzip
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import shared_sample

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "autosrh-ray")  # the console script a user runs
CRITEO = str(ROOT / "workflows" / "criteo.yaml")
QUICKSTART = str(ROOT / "workflows" / "quickstart.yaml")


def terminal(*args: str, cwd: Path) -> tuple[int, list[str]]:
    """Run ``autosrh-ray args`` as a user does; returns its exit code and every line it printed (stdout and
    stderr interleaved as a terminal shows them)."""
    done = subprocess.run([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                          timeout=300, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout.splitlines()


def assert_one_error(rc: int, lines: list[str], *named: str) -> str:
    """At most a progress line and the error line, the error naming each of ``named``; returns the error."""
    assert rc == 2, lines[-20:]
    assert 1 <= len(lines) <= 2, "\n".join(lines[:60])
    assert not any("Traceback" in line for line in lines)
    error = lines[-1]
    assert error.startswith("autosrh-ray: error: "), lines
    for text in named:
        assert text in error, error
    return error


@pytest.fixture(scope="module")
def criteo_lines() -> list[str]:
    return shared_sample("criteo/dac_sample.txt").read_text().splitlines()[:1500]


def test_a_truncated_gzip_file_names_the_file_and_the_last_whole_line(tmp_path, criteo_lines):
    whole = gzip.compress("".join(f"{x}\n" for x in criteo_lines).encode())
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])  # a download that stopped early
    readable = zlib.decompressobj(wbits=31).decompress(cut.read_bytes())  # what survives, in one call
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={cut}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    error = assert_one_error(rc, lines, str(cut), "truncated or corrupt gzip")
    whole_lines = readable.count(b"\n")
    assert f"after line {whole_lines:,} " in error and whole_lines > 500


def test_a_corrupt_gzip_file_names_the_file(tmp_path, criteo_lines):
    data = bytearray(gzip.compress("".join(f"{x}\n" for x in criteo_lines).encode()))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # bytes overwritten in the middle of the stream
    bad = tmp_path / "corrupt.txt.gz"
    bad.write_bytes(bytes(data))
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={bad}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, str(bad), "truncated or corrupt gzip")


def test_a_line_with_the_wrong_column_count_names_file_and_line(tmp_path, criteo_lines):
    lines_in = list(criteo_lines)
    lines_in[41] = "\t".join(lines_in[41].split("\t")[:20])
    path = tmp_path / "columns.txt"
    path.write_text("".join(f"{x}\n" for x in lines_in))
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={path}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, f"{path}:42: wrong_column_count", "got 20")


def test_bytes_that_are_not_utf8_name_file_line_and_column_or_are_skipped_and_counted(tmp_path, criteo_lines):
    raw = [line.encode() for line in criteo_lines]
    cols = raw[1200].split(b"\t")
    cols[20] = b"caf\xe9"  # Latin-1, not UTF-8, in the 21st column: C7
    raw[1200] = b"\t".join(cols)
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"".join(line + b"\n" for line in raw))
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={path}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, f"{path}:1201: invalid_utf8", "column C7")
    rc, lines = terminal("prepare", CRITEO, "--set", f"dataset.path={path}", "--set", "dataset.on_bad_rows=skip",
                         "--output", str(tmp_path / "skipped"), cwd=tmp_path)
    assert rc == 0 and not any("Traceback" in line for line in lines), lines
    assert f"rows read {len(raw):,} = " in lines[-1] and "skipped 1 (invalid_utf8: 1)" in lines[-1], lines


def test_an_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={path}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, str(path), "no data rows")


def test_a_missing_path_names_the_key_and_the_path(tmp_path):
    path = tmp_path / "not-there.txt"
    rc, lines = terminal("run", CRITEO, "--set", f"dataset.path={path}", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, "dataset.path", str(path))


def test_an_output_on_a_file_names_the_option_and_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    rc, lines = terminal("run", QUICKSTART, "--output", str(blocker), cwd=tmp_path)
    assert_one_error(rc, lines, "--output", str(blocker))


def test_an_unknown_key_names_the_yaml_file_and_line_or_the_set_option(tmp_path):
    workflow = tmp_path / "typo.yaml"
    workflow.write_text("dataset:\n  name: synthetic\ntrain:\n  lr: 0.01\n  bach_size: 5\n")
    rc, lines = terminal("run", str(workflow), "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert_one_error(rc, lines, f"{workflow}:5: train.bach_size: unknown config key",
                     "did you mean train.batch_size?")
    rc, lines = terminal("run", QUICKSTART, "--set", "train.bach_size=5", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    error = assert_one_error(rc, lines, "train.bach_size: unknown config key")
    assert QUICKSTART not in error  # --set, not the file, holds the key


def test_a_byte_budget_no_artifact_can_meet_is_refused_before_any_work(tmp_path):
    rc, lines = terminal("run", QUICKSTART, "--set", "prune.bytes=1", "--output", str(tmp_path / "out"),
                         cwd=tmp_path)
    assert_one_error(rc, lines, "prune.bytes: 1 bytes", "takes 5 bytes")
    assert len(lines) == 1 and not (tmp_path / "out").exists()  # refused before prepare, nothing written
