"""dataset.on_bad_rows: error names file, line and reason; skip counts every reason exactly (read = kept + skipped)."""
from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from autosrh_ray.data.errors import BAD_LABEL, BAD_VALUE, NON_NUMERIC, WRONG_COLUMN_COUNT, DataError
from autosrh_ray.data.prepare import prepare

from .helpers import brute_force_ids, config, criteo_fields, encode_rows, read_lines, splits
from tests.conftest import shared_sample


def _plant(lines: list[str]) -> tuple[list[str], dict[int, str]]:
    """Replace some lines with malformed ones; returns the lines and {0-based line index: reason}."""
    out = list(lines)
    bad: dict[int, str] = {}

    def put(i: int, text: str, reason: str) -> None:
        out[i] = text
        bad[i] = reason

    cols = lines[0].split("\t")
    put(9, "\t".join(cols[:-1]), WRONG_COLUMN_COUNT)
    put(49, "", WRONG_COLUMN_COUNT)
    put(119, "\t".join(["x"] + cols[1:]), BAD_LABEL)
    put(120, "\t".join(["2"] + cols[1:]), BAD_LABEL)
    put(199, "\t".join(cols[:3] + ["abc"] + cols[4:]), NON_NUMERIC)
    put(299, "\t".join(cols + ["extra"]), WRONG_COLUMN_COUNT)
    put(349, "\t".join([""] + cols[1:]), BAD_LABEL)
    put(379, "\t".join(cols[:5] + ["1e999"] + cols[6:]), NON_NUMERIC)  # overflows to inf: not a finite number
    return out, bad


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    lines = read_lines(shared_sample("criteo/dac_sample.txt"))[:400]
    lines, bad = _plant(lines)
    path = tmp_path_factory.mktemp("bad") / "planted.txt"
    path.write_text("".join(f"{x}\n" for x in lines))
    return path, lines, bad


def _cfg(path, mode):
    return config("dataset.name=criteo", f"dataset.path={path}", "model.name=fm", f"dataset.on_bad_rows={mode}")


def test_error_names_first_bad_line(ray_cluster, planted, tmp_path):
    path, _, bad = planted
    first = min(bad)
    with pytest.raises(DataError) as err:
        prepare(_cfg(path, "error"), tmp_path / "out", chunk_bytes=20_000)  # the bad lines fall in several chunks
    message = str(err.value)
    assert message.startswith(f"{path}:{first + 1}: {bad[first]}") and "\n" not in message
    assert not (tmp_path / "out" / "meta.json").exists()


def test_skip_counts_every_reason(ray_cluster, planted, tmp_path):
    path, lines, bad = planted
    prepared = prepare(_cfg(path, "skip"), tmp_path / "out", chunk_bytes=20_000)
    rows = prepared.rows
    assert rows.read == len(lines) == rows.train + rows.valid + rows.test + rows.skipped
    assert rows.skipped == len(bad)
    assert rows.skipped_by_reason == dict(Counter(bad.values()))
    split = splits(len(lines))  # bad lines keep their positions: the good rows' splits do not move
    names = ("train", "valid", "test")
    expected_by_split = {n: dict(Counter(r for i, r in bad.items() if split[i] == c)) for c, n in enumerate(names)}
    assert {k: v for k, v in rows.skipped_by_split.items() if v} == {k: v for k, v in expected_by_split.items() if v}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["rows"]["skipped_by_reason"] == rows.skipped_by_reason
    good = [i for i in range(len(lines)) if i not in bad]
    tokens = [criteo_fields(r) for r in csv.reader([lines[i] for i in good], delimiter="\t", quoting=csv.QUOTE_NONE)]
    good_split = split[good]
    field_names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    _, value_ids, oov_ids = brute_force_ids(field_names, tokens, good_split == 0, 1)
    ids = encode_rows(tokens, value_ids, oov_ids)
    for code, name in enumerate(names):
        assert np.array_equal(prepared.load_split(name).ids, ids[good_split == code]), name
        assert getattr(rows, name) == int((good_split == code).sum())


def test_avazu_bad_hour_and_header_line_numbers(ray_cluster, tmp_path):
    header = "id,click,hour,C1,site_id"
    body = ["1,0,14102100,1005,a", "2,1,14102101,1005,b", "3,0,14x02100,1005,a", "4,0,14102102,1005,c",
            "5,1,14102103,1005"]
    path = tmp_path / "train.csv"
    path.write_text("\n".join([header, *body]) + "\n")
    cfg = config("dataset.name=avazu", f"dataset.path={path}", "model.name=fm")
    with pytest.raises(DataError, match=rf"^{path}:4: {BAD_VALUE} \(hour = '14x02100' is not YYMMDDHH\)"):
        prepare(cfg, tmp_path / "out")
    cfg = config("dataset.name=avazu", f"dataset.path={path}", "model.name=fm", "dataset.on_bad_rows=skip",
                 "dataset.split=[0.5, 0.5, 0.0]")
    prepared = prepare(cfg, tmp_path / "out2")
    assert prepared.rows.skipped_by_reason == {BAD_VALUE: 1, WRONG_COLUMN_COUNT: 1}
    assert prepared.rows.read == 5 and prepared.rows.train + prepared.rows.valid == 3


def test_parquet_bad_label_names_row(ray_cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"y": ["1", "0", "yes", "1"], "a": ["p", "q", "p", "r"], "x": [1.0, 2.0, None, 4.0]}),
                   tmp_path / "t.parquet", row_group_size=2)
    base = ["dataset.name=tabular", f"dataset.path={tmp_path / 't.parquet'}", "dataset.label=y",
            "dataset.categorical=[a]", "dataset.numerical=[x]", "model.name=fm"]
    with pytest.raises(DataError, match=rf"t\.parquet:row 3: {BAD_LABEL}"):
        prepare(config(*base), tmp_path / "out")
    prepared = prepare(config(*base, "dataset.on_bad_rows=skip"), tmp_path / "out2")
    assert prepared.rows.skipped_by_reason == {BAD_LABEL: 1} and prepared.rows.read == 4


def test_the_first_bad_row_is_exact_past_float64_positions():
    """Positions are file·2^40 + line: past file 8192 neighbouring lines differ by less than a float64 can tell apart.
    The statistics merge still names the earlier bad row, whichever chunk's table comes first."""
    import pyarrow as pa

    from autosrh_ray.data.inputs import position
    from autosrh_ray.data.readers import Layout, Parsed
    from autosrh_ray.data.statistics_table import StatisticsMerger
    from autosrh_ray.data.vocabulary import FieldSpec, merge_statistics, piece_statistics

    layout = Layout(name="t", kind="text", columns=("label", "c"), categorical=("c",))
    first, second = int(position(1 << 20, 1)), int(position(1 << 20, 2))
    assert float(first) == float(second)  # what a float64 comparison would have lost

    def piece(bad: int) -> pa.Table:
        parsed = Parsed("f", {"c": pa.array(["a", "b"])}, np.zeros(2), np.array([first - 10, first - 9]),
                        first_bad=(bad, f"line {bad}"))
        return piece_statistics(parsed, layout, "bucketize", 2026, [0.8, 0.1, 0.1])

    for order in ((second, first), (first, second)):
        merger = StatisticsMerger()
        for bad in order:
            merger.add(piece(bad))
        stats = merge_statistics(merger.result(), [FieldSpec("c", "categorical")])
        assert stats.first_bad == (first, f"line {first}")
