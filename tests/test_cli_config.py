"""Bad configs exit non-zero with one stderr line naming the key, before any training."""
import subprocess
import sys
from pathlib import Path

import pytest

from autosrh_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "workflows" / "quickstart.yaml"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "autosrh_ray", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("override,key", [
    ("model.name=transformer", "model.name"),
    ("search.K=0", "search.K"),
    ("prune.cr=0.5", "prune.cr"),
    ("search.bogus=1", "search.bogus"),
    ("dataset.name=criteo", "dataset.path"),
    ("dataset.path=/nonexistent/dac.txt", "dataset.path"),
    ("ray.worker_cache_mb=-1", "ray.worker_cache_mb"),
    ("search.L=1000000", "search.L"),  # L > M: checked after prepare, before training
])
def test_bad_config_exits_nonzero_with_one_line_naming_the_key(tmp_path, override, key):
    args = ["run", str(QUICKSTART), "--set", override, "--output", str(tmp_path / "out")]
    if override.startswith("dataset.path"):
        args += ["--set", "dataset.name=criteo"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert key in lines[0]
    assert "[search]" not in proc.stdout and "[retrain" not in proc.stdout  # no training started
    assert not (tmp_path / "out" / "report.json").exists()


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.01\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:3: train\.epochz: unknown config key"):
        load_config(bad)


def test_set_values_are_parsed_as_yaml():
    cfg = load_config(QUICKSTART, ["model.hidden=[8, 4]", "prune.cr=20", "search.order=second"])
    assert cfg.model.hidden == [8, 4] and cfg.prune.cr == 20.0 and cfg.search.order == "second"
    assert cfg.xi == cfg.train.lr  # ξ defaults to the Θ learning rate


def test_removed_search_epochs_names_the_keys_that_replace_it():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["search.epochs=3"])
    message = str(err.value)
    assert message.startswith("search.epochs:") and "search.patience" in message and "search.max_epochs" in message
    assert "\n" not in message


def test_budgets_take_a_value_or_a_list():
    assert load_config(overrides=["prune.cr=10"]).prune.crs == [10.0]
    c = load_config(overrides=["prune.cr=[5, 20]", "prune.params=[1000, 2000]"])
    assert c.prune.crs == [5.0, 20.0] and c.prune.param_budgets == [1000, 2000]
    c = load_config(overrides=["prune.bytes_cr=[40, 100]", "prune.bytes=5000", "prune.cr=10"])
    assert c.prune.bytes_crs == [40.0, 100.0] and c.prune.byte_budgets == [5000]


def test_byte_budgets_come_first_one_candidate_per_precision_unless_one_is_set():
    from autosrh_ray.artifact.budget import budgets

    c = load_config(overrides=["prune.bytes_cr=40", "prune.bytes=5000", "prune.cr=10"])
    got = [(b.name, b.group, b.precision, b.bytes, b.int_scales) for b in budgets(c.prune, 1000, 16)]
    # each precision (int scales per row), then int8 and int4 with scales per block and dimension (int_scales: auto)
    candidates = [(p, "row") for p in ("fp32", "fp16", "int8", "int4")] + [("int8", "dim"), ("int4", "dim")]
    size = 1000 * 16 * 4 // 40
    assert got[:6] == [(f"bytes_cr40-{p}" + ("-dim" if s == "dim" else ""), "bytes_cr40", p, size, s)
                       for p, s in candidates]
    assert got[6:12] == [(f"bytes5000-{p}" + ("-dim" if s == "dim" else ""), "bytes5000", p, 5000, s)
                         for p, s in candidates]
    assert got[12] == ("cr10", "", "fp32", None, "row")
    c = load_config(overrides=["prune.bytes_cr=40", "prune.precision=int4"])
    assert [(b.name, b.precision, b.int_scales) for b in budgets(c.prune, 1000, 16)] == [
        ("bytes_cr40-int4", "int4", "row"), ("cr10", "int4", "row")]
    c = load_config(overrides=["prune.bytes_cr=40", "prune.int_scales=dim"])  # one layout for every candidate
    assert [(b.name, b.int_scales) for b in budgets(c.prune, 1000, 16)] == [
        ("bytes_cr40-fp32", "row"), ("bytes_cr40-fp16", "row"), ("bytes_cr40-int8-dim", "dim"),
        ("bytes_cr40-int4-dim", "dim"), ("cr10", "row")]
    for method in ("autodim", "autoemb"):
        with pytest.raises(ConfigError, match=f"^prune.bytes_cr: byte budgets are for search.method autosrh, "
                                              f"magnitude, grid, random, mde, pep \\({method} chooses its own size"):
            load_config(overrides=["prune.bytes_cr=40", f"search.method={method}"])
    for method in ("pep", "grid", "random", "mde"):
        load_config(overrides=["prune.bytes_cr=40", f"search.method={method}"])


@pytest.mark.parametrize("space, key", [
    ("{search.K: [0]}", "tune.search_space.search.K"),
    ("{dataset.seed: [1, 2]}", "tune.search_space.dataset.seed"),
    ("{search.Q: [1]}", "tune.search_space.search.Q"),
    ("{train.lr: {normal: [0.1, 1]}}", "tune.search_space.train.lr"),
    ("{train.lr: {loguniform: [0.1, 0.01]}}", "tune.search_space.train.lr"),
])
def test_a_bad_search_space_is_one_line_naming_its_key(space, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"tune.search_space={space}"])
    assert str(err.value).startswith(f"{key}:") and "\n" not in str(err.value)


def test_a_misspelled_key_gets_the_closest_key():
    with pytest.raises(ConfigError, match=r"^search\.lr_alfa: unknown config key; did you mean search\.lr_alpha\?"):
        load_config(overrides=["search.lr_alfa=0.1"])
    with pytest.raises(ConfigError, match=r"^serch: unknown config key; did you mean search\?"):
        load_config(overrides=["serch.K=3"])


def test_config_reference_covers_every_key_and_docs_are_current(tmp_path):
    from autosrh_ray import config_reference

    assert set(config_reference.keys()) == set(config_reference.MEANING)  # no key undocumented, no stale meaning
    listed = run_cli("config", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    table = [line for line in listed.stdout.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == config_reference.keys()
    assert (ROOT / "docs" / "config.md").read_text() == listed.stdout, "regenerate: autosrh-ray config --list"


def test_version(tmp_path):
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("autosrh-ray ") and "not installed" not in proc.stdout


def test_the_study_budget_is_the_first_budget_whatever_its_kind():
    from autosrh_ray.artifact.budget import study_budget

    def budget(*overrides):
        return study_budget(load_config(overrides=list(overrides)).prune, 1000, 16)

    assert budget("prune.params=[700, 300]", "prune.cr=10") == 700
    assert budget("prune.cr=[8, 20]") == 2000
    assert budget("prune.cr=[]", "prune.bytes_cr=[32, 40]") == 500  # 64,000 B ÷ 32 = 2,000 B: 500 fp32 values
    assert budget("prune.cr=[]", "prune.bytes=1000") == 250
