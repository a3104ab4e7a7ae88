"""The layout holds: no import cycle among the package's modules, the engine imports nothing of Ray, and the two
registries take a method and a backbone of one's own by import path — each failure one line naming its key — that
run a workflow end to end on Ray (tests/toys: outside the package)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autosrh_ray.artifact.format import load_model
from autosrh_ray.config import load_config, with_overrides
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.models.backbone import build_backbone, probe_backbone
from autosrh_ray.errors import ConfigError
from autosrh_ray.methods.in_process import run_all_in_process
from autosrh_ray.methods.registry import BUILT_IN, method_of

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "autosrh_ray"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every package module → the package modules it imports (anywhere in it: module top or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # ``from pkg import module`` imports the module (its package runs first, as for every import);
                # ``from module import name`` imports the module
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = submodules or [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                # the module itself, or the nearest enclosing package module (``a.b.c`` → ``a.b``)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_package_modules():
    graph = _import_graph()
    assert "autosrh_ray.methods.in_process" in graph["autosrh_ray.workflow"]  # the graph was read, edges too
    assert len(graph) > 60
    assert _cycles(graph) == []


def test_the_engine_imports_nothing_of_ray():
    """Statically (no engine module names ray, directly or through the package modules it imports) and at run time
    (importing every engine module in a fresh interpreter loads no ray module)."""
    graph = _import_graph()
    engine = sorted(m for m in graph if m.startswith("autosrh_ray.engine"))
    seen, todo = set(), list(engine)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    names_ray = []
    for module in seen:
        path = PACKAGE.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
                names_ray.append(module)
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "ray":
                names_ray.append(module)
    assert names_ray == [], f"engine modules reach Ray through {sorted(set(names_ray))}"
    code = ("import importlib, sys\n"
            f"for m in {engine!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in sys.modules if k == 'ray' or k.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_method_is_registered_under_its_name(name):
    assert method_of(name).name == name


@pytest.mark.parametrize("name, message", [
    ("nosuch", "unknown method 'nosuch'"),
    ("tests.toys.nosuch:M", "cannot import 'tests.toys.nosuch'"),
    ("tests.toys.method:NOPE", "has no 'NOPE'"),
    ("tests.toys.method:run_first_dims", "not an autosrh_ray.methods.registry.Method"),
])
def test_a_bad_method_is_one_line_naming_search_method(name, message):
    with pytest.raises(ConfigError) as err:
        method_of(name)
    text = str(err.value)
    assert text.startswith("search.method: ") and message in text and "\n" not in text


def test_a_backbone_of_ones_own_is_built_with_its_options_and_probed():
    backbone = build_backbone("tests.toys.backbone:Bilinear", 3, 8, {"rank": 2})
    assert backbone.project.out_features == 2
    probe_backbone(backbone, "tests.toys.backbone:Bilinear", 3, 8)
    # the same interaction by brute force over pairs of fields, in float64
    e, first = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    z = e @ backbone.project.weight.double().T
    pairs = sum((z[:, f] * z[:, g]).sum(1) for f in range(3) for g in range(f + 1, 3))
    torch.testing.assert_close(backbone.double()(e, first), first + pairs)


@pytest.mark.parametrize("name, options, message", [
    ("tests.toys.nosuch:Net", {}, "cannot import 'tests.toys.nosuch'"),
    ("tests.toys.backbone:NoDim", {}, "failed: TypeError"),
    ("tests.toys.backbone:Bilinear", {"depth": 3}, "failed: TypeError"),
    ("tests.toys.backbone:WrongShape", {}, "must return logits of shape (B,) = (2,) for 2 rows; got (2, 1)"),
    ("tests.toys.backbone:run", {}, "has no 'run'"),
    ("mf", {}, "mf needs exactly 2 fields"),
    ("nosuch", {}, "unknown model 'nosuch'"),
])
def test_a_bad_backbone_is_one_line_naming_model_name(name, options, message):
    with pytest.raises(ConfigError) as err:
        probe_backbone(build_backbone(name, 3, 8, options), name, 3, 8)
    text = str(err.value)
    assert text.startswith("model.name: ") and message in text and "\n" not in text


SMALL = ["dataset.synthetic.rows=20000", "search.K=8", "search.L=4", "train.batch_size=512", "prune.cr=4",
         "ray.num_workers=1"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the toys are importable in every process, as a user's code is
    return subprocess.run([sys.executable, "-m", "autosrh_ray", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)


@pytest.mark.slow
def test_a_method_and_a_backbone_of_ones_own_run_a_workflow_on_ray_train(tmp_path):
    out = tmp_path / "toy"
    sets = [*SMALL, "model.name=tests.toys.backbone:Bilinear", "model.options={rank: 3}",
            "search.method=tests.toys.method:FIRST_DIMS", "report.reference=none"]
    done = _cli("run", str(ROOT / "workflows" / "quickstart.yaml"), "--output", str(out),
                *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[first-dims] cr4: 2 dimensions per feature" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "tests.toys.method:FIRST_DIMS" and report["model"] == "tests.toys.backbone:Bilinear"
    assert report["params"]["kept"] == 2 * report["num_features"]  # the toy's own choice, not a pruning's
    assert report["test"]["auc"] > 0.6
    # the artifact records the backbone's import path and options, and loads back into it
    model = load_model(out / "model.pt")
    assert type(model.backbone).__name__ == "Bilinear" and model.backbone.project.out_features == 3


TINY = ["dataset.synthetic.rows=3000", "dataset.synthetic.categorical_fields=4", "dataset.synthetic.signal_fields=2",
        "dataset.synthetic.numerical_fields=1", "dataset.synthetic.vocab_size=100", "search.K=4", "search.L=2",
        "train.batch_size=256", "search.max_epochs=2", "train.max_epochs=2", "train.patience=1", "prune.cr=[4]",
        "search.grid_K=[1, 2]", "search.random_trials=1", "search.autodim_candidates=[2, 4]",
        "search.autoemb_candidates=[2, 4]", "ray.num_workers=0", "model.name=tests.toys.backbone:Bilinear",
        "model.options={rank: 2}"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = load_config(None, TINY)
    prepared = prepare_synthetic(config, tmp_path_factory.mktemp("tiny"))
    return config, prepared, prepared.load_split("train"), prepared.load_split("valid")


@pytest.mark.parametrize("method", sorted(BUILT_IN))
def test_every_method_searches_a_backbone_of_ones_own(tiny, method):
    """Every built-in method's stage graph trains, prunes (or sizes) and retrains a user's backbone, its options
    applied."""
    config, prepared, train, valid = tiny
    config = with_overrides(config, {"search.method": method})
    (result,) = run_all_in_process(config, prepared, train, valid, log=lambda _: None)
    assert type(result.model.backbone).__name__ == "Bilinear" and result.model.backbone.project.out_features == 2
    assert result.retrain.epochs >= 1
    kept = result.model.embedding.kept_count()
    assert kept == prepared.num_features * 4 if method == "uniform" else kept < prepared.num_features * 4
