"""``--output`` is checked before any work: a path that cannot be created or written is one line naming
``--output``; a run that fails before writing anything leaves no empty output directory behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from autosrh_ray import cli

QUICKSTART = str(Path(__file__).resolve().parents[1] / "workflows" / "quickstart.yaml")


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_output_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, where):
    if where == "under_a_file":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        output = blocker / "run"
    else:
        output = Path("/proc/autosrh-ray-cannot-write-here")
    rc = cli.main(["run", QUICKSTART, "--output", str(output)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"autosrh-ray: error: --output: cannot create or write {output}") and err.count("\n") == 1


def test_a_run_that_fails_before_writing_leaves_no_empty_output(tmp_path, capsys):
    output = tmp_path / "run"
    rc = cli.main(["run", QUICKSTART, "--set", "dataset.name=criteo", "--set",
                   f"dataset.path={tmp_path / 'missing.txt'}", "--set", "model.name=fm", "--output", str(output)])
    assert rc == 2 and "dataset.path" in capsys.readouterr().err
    assert not output.exists()
