"""``prune.precision``: the workflow stores the kept values at that precision, reports the bytes its artifact
holds (counted from the file), and reports the test metric of the model as stored — the artifact, loaded and
scored independently here, gives the same numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autosrh_ray import workflow
from autosrh_ray.artifact.format import load_model, tensor_bytes
from autosrh_ray.config import ConfigError, budget_choice_rows
from autosrh_ray.data.split import in_alpha_slice
from autosrh_ray.engine.metrics import task_metrics
from autosrh_ray.methods.in_process import InProcessExecutor
from autosrh_ray.report.schema import ModelEntry, Report

from .distributed.helpers import prepared_small, small_config


def test_an_int8_run_reports_its_artifacts_bytes_and_the_stored_models_metrics(tmp_path):
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "prune.precision=int8")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    path = tmp_path / "out" / report["artifacts"]["model"]
    payload = torch.load(path, weights_only=True)
    assert report["precision"] == "int8" and payload["embedding"]["precision"] == "int8"
    b = report["bytes"]
    assert b["embedding"] == tensor_bytes(payload["embedding"]) and b["dense_fp32"] == report["num_features"] * \
        report["K"] * 4
    assert b["bytes_cr"] == b["dense_fp32"] / b["embedding"]
    (e,) = payload["embedding"]["segments"]
    assert e["precision"] == "int8" and e["first"] == 0
    fp32 = b["embedding"] - tensor_bytes([e["values"], e["scale"], e["bias"]]) + 4 * report["params"]["kept"]
    assert b["embedding"] < fp32  # one byte per value and 4 per kept row instead of 4 per value
    assert path.stat().st_size <= 1.05 * (b["embedding"] + b["other"]) + 64 * 1024
    ref = report["reference"]
    assert ref["precision"] == "fp32" and ref["bytes"]["bytes_cr"] < 1.0  # UE: every entry, plus its index

    expected = stored_model_metrics(path, prepared, "test", config.task)
    for key, value in report["test"].items():
        assert abs(value - expected[key]) < 1e-6, key


def test_int8_with_dim_scales_stores_one_scale_per_block_and_dimension_and_reports_the_stored_model(tmp_path):
    """``prune.int_scales: dim`` with a CR budget: the artifact's codes share a scale per search block and
    dimension (search.L·K of them), the report says so, and its metrics are the stored model's."""
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", "prune.precision=int8", "prune.int_scales=dim")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    path = tmp_path / "out" / report["artifacts"]["model"]
    section = torch.load(path, weights_only=True)["embedding"]
    (segment,) = section["segments"]
    assert report["precision"] == "int8" and report["int_scales"] == "dim" and segment["scales"] == "dim"
    assert segment["scale"].numel() == config.search.L * config.search.K == section["block_starts"].numel() * \
        config.search.K
    assert report["bytes"]["embedding"] == tensor_bytes(section)
    expected = stored_model_metrics(path, prepared, "test", config.task)
    for key, value in report["test"].items():
        assert abs(value - expected[key]) < 1e-6, key


def stored_model_metrics(path, prepared, split: str, task: str, held=None) -> dict:
    """The metrics of the artifact at ``path`` on ``split`` (``held``: on the rows of that hashed slice only),
    loaded and scored here (independently of the run)."""
    model = load_model(path)
    rows = prepared.load_split(split)
    if held is not None:
        rows = rows.rows(in_alpha_slice(rows.ids, *held))
    with torch.no_grad():
        scores = model(torch.from_numpy(rows.ids), torch.from_numpy(rows.values)).double().numpy()
    return task_metrics(task, rows.labels.astype(np.float64), scores)


def test_a_byte_budget_fits_its_bytes_at_every_precision_and_keeps_the_one_validation_prefers(tmp_path):
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", "prune.bytes_cr=3", "prune.cr=10")
    out = tmp_path / "out"
    report = workflow.run(config, out, prepared=prepared, log=lambda _: None)
    first, cr10 = report["models"]
    assert report["budget"] == first["budget"] == "bytes_cr3" and cr10["budget"] == "cr10"
    budget = first["bytes"]["dense_fp32"] // 3
    rows = first["candidates"]
    assert [r["precision"] for r in rows[:4]] == ["fp32", "fp16", "int8", "int4"]
    assert [r.get("int_scales") for r in rows[:4]] == [None, None, "row", "row"]
    # the integer precisions again with a scale per block and dimension (prune.int_scales: auto), last
    by_dim = [r for r in rows if r.get("int_scales") == "dim"]
    assert [(r["name"], r["precision"]) for r in by_dim] == [("bytes_cr3-int8-dim", "int8"), ("bytes_cr3-int4-dim", "int4")]
    assert rows[-2:] == by_dim
    # a precision per block (search.L = 3) guided by the dims the blocks keep, unless it repeats another candidate
    mixed = rows[4:-2]
    assert mixed and {r["name"] for r in mixed} <= {"bytes_cr3-mixed", "bytes_cr3-mixed-int4"}
    for row in mixed:
        assert len(row["precision"]) == 3 and len(set(row["precision"])) > 1
    assert len({(str(r["precision"]), r.get("int_scales")) for r in rows}) == len(rows)
    for row in rows:
        section = torch.load(out / row["model"], weights_only=True)["embedding"]
        assert section["precision"] == row["precision"] and tensor_bytes(section) == row["bytes"] <= budget
        assert ("block_starts" in section) == (row in by_dim)  # L int32 first ids: the blocks the scales are of
        assert {s.get("scales") for s in section["segments"]} == ({"dim"} if row in by_dim else {None})
        assert "auc" in row["test"]
    # per block and dimension, the scales cost L·K·4 bytes instead of 4 per kept row: more entries fit
    own = {r["name"]: r for r in rows}
    assert own["bytes_cr3-int8-dim"]["kept"] > own["bytes_cr3-int8"]["kept"]
    assert [r["kept"] for r in rows[:2]] == sorted(r["kept"] for r in rows[:2])  # fp16 fits more than fp32
    best = min(rows, key=lambda r: r["valid"]["logloss"])
    assert best["chosen"] and sum(r["chosen"] for r in rows) == 1
    assert first["precision"] == best["precision"] and first["params"]["kept"] == best["kept"]
    assert first["bytes"]["embedding"] == best["bytes"] and first["bytes"]["bytes_cr"] >= 3
    assert (out / "model.pt").read_bytes() == (out / best["model"]).read_bytes()  # the top level's model
    assert cr10["precision"] == "fp32" and "candidates" not in cr10
    # compared on the validation rows α's stream left out (prune.choice_fraction), scored here from each file
    held = budget_choice_rows(config)
    assert held == (0.25, config.train.seed) and "held from α" in first["chosen_on"]
    for row in rows:
        expected = stored_model_metrics(out / row["model"], prepared, "valid", config.task, held)
        assert abs(row["valid"]["logloss"] - expected["logloss"]) < 1e-6, row["name"]


def test_a_byte_budget_is_a_ceiling_a_tighter_budgets_model_competes_for_it(tmp_path):
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", "prune.precision=fp16", "prune.bytes_cr=[3, 6, 12]",
                                      "prune.cr=[]")
    out = tmp_path / "out"
    report = workflow.run(config, out, prepared=prepared, log=lambda _: None)
    assert [m["budget"] for m in report["models"]] == ["bytes_cr3", "bytes_cr6", "bytes_cr12"]
    held = budget_choice_rows(config)
    assert held is not None  # one precision, but a choice among budgets: made on the rows α left out
    own = {}
    for entry in report["models"]:
        rows = entry["candidates"]
        own[entry["budget"]] = next(r for r in rows if r["budget"] == entry["budget"])
        for row in rows:
            expected = stored_model_metrics(out / row["model"], prepared, "valid", config.task, held)
            assert abs(row["valid"]["logloss"] - expected["logloss"]) < 1e-6, row["name"]
        best = min(rows, key=lambda r: r["valid"]["logloss"])
        assert best["chosen"] and sum(r["chosen"] for r in rows) == 1
        assert entry["bytes"]["embedding"] == best["bytes"] <= entry["bytes"]["dense_fp32"] // int(entry["budget"][8:])
        assert entry["params"]["kept"] == best["kept"] and entry["artifacts"]["model"] == best["model"]
    limit = {b: report["models"][0]["bytes"]["dense_fp32"] // int(b[8:]) for b in own}
    for entry in report["models"]:  # its own candidate, and every other that fits its bytes — no other
        fits = {b for b, row in own.items() if row["bytes"] <= limit[entry["budget"]]}
        assert {r["budget"] for r in entry["candidates"]} == fits | {entry["budget"]}
    assert [r["budget"] for r in report["models"][2]["candidates"]] == ["bytes_cr12"]
    assert len(report["models"][0]["candidates"]) == 3  # the tighter two fit the loosest
    assert (out / "model.pt").read_bytes() == (out / report["models"][0]["artifacts"]["model"]).read_bytes()


def test_alphas_stream_leaves_out_the_validation_rows_a_precision_is_chosen_on(tmp_path):
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "prune.bytes_cr=3",
                                      "train.batch_size=64")
    valid = prepared.load_split("valid")
    executor = InProcessExecutor(config, prepared, prepared.load_split("train"), valid, log=lambda _: None)
    seen = {tuple(r) for b in executor.alpha_batches(0) for r in b.ids.tolist()}
    held = in_alpha_slice(valid.ids, *budget_choice_rows(config))
    assert 0.15 < held.mean() < 0.35  # about a quarter of the rows
    assert seen and seen.isdisjoint(map(tuple, valid.ids[held].tolist()))
    assert seen <= set(map(tuple, valid.ids[~held].tolist()))
    for overrides in (["prune.cr=10"], ["prune.bytes_cr=3", "prune.precision=fp16"],
                      ["prune.bytes_cr=3", "prune.choice_fraction=0"], ["prune.bytes_cr=3", "search.method=magnitude"]):
        assert budget_choice_rows(small_config(*overrides)) is None, overrides  # nothing chosen, or no α on it
    with pytest.raises(ConfigError, match="prune.choice_fraction"):
        small_config("prune.choice_fraction=1")


def test_a_precision_per_block_is_one_per_search_block():
    with pytest.raises(ConfigError, match="prune.precision.*search.L = 3"):
        small_config("prune.precision=[fp16, int8]")
    with pytest.raises(ConfigError, match=r"prune.precision\[1\]"):
        small_config("prune.precision=[fp16, int9, int4]")


def test_a_quantisation_aware_retrain_validates_the_model_it_stores(tmp_path):
    """``prune.quant_aware``: the retrain's forward reads the kept values as the artifact stores them (int4 in the
    frequent block, int8 then fp16 in the others), so the validation the retrain stopped on is the stored model's."""
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", "prune.precision=[int4, int8, fp16]",
                                      "prune.quant_aware=true")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    assert report["precision"] == ["int4", "int8", "fp16"]
    expected = stored_model_metrics(tmp_path / "out" / report["artifacts"]["model"], prepared, "valid", config.task)
    for key, value in report["valid"].items():
        assert abs(value - expected[key]) < 1e-6, key


def test_a_run_with_only_a_byte_budget_trains_its_ue_reference(tmp_path):
    """``prune.cr: []`` with a byte budget is a whole config: the UE reference (which takes no budget) runs too."""
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false", "prune.cr=[]",
                                      "prune.bytes_cr=3", "prune.precision=fp16")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    assert [m["budget"] for m in report["models"]] == ["bytes_cr3"]
    assert report["reference"]["method"] == "uniform" and report["reference"]["bytes"]["bytes_cr"] < 1.0
    with pytest.raises(ConfigError, match="^prune.cr: needs at least one budget"):
        small_config("prune.cr=[]")


def _smallest_by_layout(dim: int, precision: str) -> int:
    """One entry of the first feature, as the artifact's layout is documented: a 1-byte bitmap, the cheaper index
    (a count byte and a dimension byte, or a K-bit mask), the value, and an fp16 scale and bias for int rows."""
    value = {"fp32": 4, "fp16": 2, "int8": 1 + 4, "int4": 1 + 4}[precision]
    return 1 + min(2, -(-dim // 8)) + value


@pytest.mark.parametrize("precision", ["auto", "fp32", "int8"])
def test_a_byte_budget_no_artifact_can_meet_is_refused_before_any_work(precision):
    from autosrh_ray.artifact.budget import check_byte_budgets

    k = 16
    choices = ["fp32", "fp16", "int8", "int4"] if precision == "auto" else [precision]
    smallest = min(_smallest_by_layout(k, p) for p in choices)
    config = small_config(f"prune.precision={precision}", f"search.K={k}", f"prune.bytes={smallest}")
    check_byte_budgets(config.prune, k)  # exactly the smallest fits
    config = small_config(f"prune.precision={precision}", f"search.K={k}", f"prune.bytes=[100, {smallest - 1}]")
    with pytest.raises(ConfigError, match=rf"^prune\.bytes: {smallest - 1} bytes: no embedding fits; .* takes "
                                          rf"{smallest} bytes$"):
        check_byte_budgets(config.prune, k)
    # a ratio is known once M is: M·K·4 ÷ bytes_cr
    m = 1000
    config = small_config(f"prune.precision={precision}", f"search.K={k}", f"prune.bytes_cr={m * k * 4 / (smallest - 1)}")
    check_byte_budgets(config.prune, k)  # M unknown: not checked yet
    with pytest.raises(ConfigError, match=r"^prune\.bytes_cr: .* no embedding fits"):
        check_byte_budgets(config.prune, k, m)


def test_a_candidate_over_its_byte_budget_is_reported_and_chosen_only_when_none_fits(tmp_path):
    """Each candidate keeps at least one entry, and where that entry's artifact is over the bytes (its feature's
    id costs up to 4 B of index) the report says so per candidate; the choice is among those within the budget,
    and only when none is does the smallest stand for it — reported as over, also in the summary line."""
    from autosrh_ray.cli import _model_line

    k = 8
    worst_fp16 = 4 + 1 + 2  # one fp16 entry of any feature: its id, its dims byte pair at K 8 (a mask byte), the value
    tight = _smallest_by_layout(k, "fp16")  # fits only if the best entry is among the first 8 features
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", f"prune.bytes=[{worst_fp16}, {tight}]", "prune.cr=[]")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    loose_entry, tight_entry = report["models"]
    for entry, limit in ((loose_entry, worst_fp16), (tight_entry, tight)):
        rows = entry["candidates"]
        assert entry["budget_bytes"] == limit
        for row in rows:
            assert row["within_budget"] == (row["bytes"] <= limit), row
        assert not next(r for r in rows if r["name"].endswith("-fp32"))["within_budget"] or limit > 6
        (chosen,) = [r for r in rows if r["chosen"]]
        met = [r for r in rows if r["within_budget"]]
        if met:
            assert chosen == min(met, key=lambda r: r["valid"]["logloss"])
        else:
            assert chosen["bytes"] == min(r["bytes"] for r in rows)
        assert entry["within_budget"] == bool(met) == (entry["bytes"]["embedding"] <= limit)
        assert ("EXCEEDS its budget" in _model_line(ModelEntry.from_json(entry))) == (not met)
    assert loose_entry["within_budget"]  # one fp16 entry always fits
    # this data's best entry lies past the first 8 features (seeded): nothing fits the tight budget
    assert not tight_entry["within_budget"]
    # report.md states each limit, lists every candidate and marks what is over
    from autosrh_ray.report.markdown import byte_budget_tables, model_table

    tables = "\n".join(byte_budget_tables(Report.from_json(report)))
    for entry, limit in ((loose_entry, worst_fp16), (tight_entry, tight)):
        assert f"### {entry['budget']}: at most {limit:,} embedding bytes" in tables
        for row in entry["candidates"]:
            (line,) = [x for x in tables.splitlines() if x.startswith(f"| {row['name']} |")
                       and x in tables.split(f"### {entry['budget']}:")[1].split("###")[0]]
            assert ("| **no** |" in line) == (not row["within_budget"]) and line.endswith("| ✓ |") == row["chosen"]
    models = "\n".join(model_table(Report.from_json(report)))
    assert models.count("over its budget") == 1 and f"(≤ {tight} B; CR " in models


def test_a_fixed_scheme_that_fits_no_budget_says_so_in_the_report_and_the_summary_line(tmp_path):
    from autosrh_ray.cli import _model_line

    # grid's smallest scheme keeps one dimension of every feature: more than M·K / 100 entries
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false",
                                      "report.reference=none", "search.method=grid", "search.grid_K=[1, 2]",
                                      "prune.cr=[2, 100]")
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    loose, tight = report["models"]
    m = report["num_features"]
    assert loose["within_budget"] and loose["params"]["kept"] <= loose["budget_params"] == round(m * 8 / 2)
    assert not tight["within_budget"] and tight["params"]["kept"] == m > tight["budget_params"]
    for entry in (loose, tight):
        for row in entry["candidates"]:
            assert row["within_budget"] == (row["kept"] <= entry["budget_params"])
    tight, loose = ModelEntry.from_json(tight), ModelEntry.from_json(loose)
    assert "EXCEEDS its budget" in _model_line(tight) and "EXCEEDS" not in _model_line(loose)
