"""Readers on the real samples in ../shared/data, checked against the csv module (no Ray needed)."""
from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest

from autosrh_ray.data.inputs import (LINE_BITS, assign_positions, count_chunk_lines, needs_counting, placed_text_chunks,
                                     plan_text_chunks)
from autosrh_ray.data.readers import Layout, input_files, layout_for, parse_chunk

from .helpers import config, csv_rows
from tests.conftest import shared_sample


def read_all(cfg, chunk_bytes: int = 1 << 18):
    """Every parsed row of a text dataset via the project's readers, chunked small so pieces meet."""
    files = input_files(cfg)
    layout = layout_for(cfg, files)
    chunks = placed_text_chunks(files, layout.header, chunk_bytes)
    parts = [p for c in chunks for p in parse_chunk(layout, c)]
    columns = {k: pa.concat_arrays([p.columns[k] for p in parts]) for k in parts[0].columns}
    labels = np.concatenate([p.labels for p in parts])
    positions = np.concatenate([p.positions for p in parts])
    bad = sum(len(p.bad_positions) for p in parts)
    return layout, columns, labels, positions, bad, len(chunks)


def _check_positions(positions, n):
    assert np.array_equal(positions, np.arange(n))


def test_criteo_sample():
    path = shared_sample("criteo/dac_sample.txt")
    _, rows = csv_rows(path, "\t", header=False)
    layout, cols, labels, positions, bad, nchunks = read_all(config("dataset.name=criteo", f"dataset.path={path}",
                                                                     "model.name=fm"))
    assert nchunks > 1 and bad == 0
    assert len(labels) == len(rows) == 8184
    _check_positions(positions, len(rows))
    assert len(layout.numerical_fields) + len(layout.categorical_fields) == 39 == len(rows[0]) - 1
    assert labels.tolist() == [float(r[0]) for r in rows]
    assert labels.astype(np.float64).mean() == pytest.approx(0.217, abs=5e-4)  # README: CTR 0.217
    for j, name in enumerate(layout.numerical_fields, start=1):
        x = cols[name].to_numpy(zero_copy_only=False)
        expected = np.array([float(r[j]) if r[j] != "" else np.nan for r in rows])
        assert np.array_equal(np.isnan(x), np.isnan(expected)), name
        assert np.array_equal(x[~np.isnan(x)], expected[~np.isnan(expected)]), name
    for j, name in enumerate(layout.categorical_fields, start=14):
        assert cols[name].to_pylist() == [r[j] for r in rows], name
    assert sum(r[j] == "" for r in rows for j in range(14, 40)) > 0  # missing categorical values stay ""
    assert sum(r[j] == "" for r in rows for j in range(1, 14)) > 0  # missing numerical values are NaN


def test_avazu_sample():
    path = shared_sample("avazu/train_sample.csv")
    header, rows = csv_rows(path, ",", header=True)
    layout, cols, labels, positions, bad, _ = read_all(config("dataset.name=avazu", f"dataset.path={path}",
                                                              "model.name=fm"))
    assert bad == 0 and len(labels) == len(rows) == 8999
    _check_positions(positions, len(rows))
    assert layout.categorical_fields[:2] == ["hour_of_day", "weekday"]
    assert len(layout.categorical_fields) == len(header) - 3 + 2 and "id" not in layout.categorical_fields
    click = header.index("click")
    assert labels.tolist() == [float(r[click]) for r in rows]
    assert labels.astype(np.float64).mean() == pytest.approx(0.174, abs=5e-4)  # README: CTR 0.174
    hour = header.index("hour")
    assert cols["hour_of_day"].to_pylist() == [str(int(r[hour][6:])) for r in rows]
    weekdays = [str(datetime.date(2000 + int(r[hour][:2]), int(r[hour][2:4]), int(r[hour][4:6])).weekday())
                for r in rows]
    assert cols["weekday"].to_pylist() == weekdays
    site = header.index("site_id")
    assert cols["site_id"].to_pylist() == [r[site] for r in rows]


def test_kdd12_sample():
    path = shared_sample("kdd12/training_sample.txt")
    _, rows = csv_rows(path, "\t", header=False)
    layout, cols, labels, positions, bad, _ = read_all(config("dataset.name=kdd12", f"dataset.path={path}",
                                                              "model.name=fm"))
    assert bad == 0 and len(labels) == len(rows)
    assert len(layout.categorical_fields) == 10 and not layout.numerical_fields
    assert labels.tolist() == [1.0 if int(r[0]) > 0 else 0.0 for r in rows]
    assert cols["UserID"].to_pylist() == [r[11] for r in rows]
    assert "impression" not in cols


@pytest.mark.parametrize("name,relative,header", [
    ("movielens", "movielens/ratings.csv", True),
    ("amazon", "amazon/ratings_Electronics_sample.csv", False),
])
def test_rating_samples(name, relative, header):
    path = shared_sample(relative)
    _, rows = csv_rows(path, ",", header=header)
    layout, cols, labels, positions, bad, nchunks = read_all(
        config(f"dataset.name={name}", f"dataset.path={path}", "model.name=mf"))
    assert bad == 0 and len(labels) == len(rows) and nchunks > 1
    _check_positions(positions, len(rows))
    assert layout.categorical_fields == ["user", "item"] and layout.label_kind == "real"
    assert labels.astype(np.float64) == pytest.approx(np.array([float(r[2]) for r in rows]))
    assert cols["user"].to_pylist() == [r[0] for r in rows]
    assert cols["item"].to_pylist() == [r[1] for r in rows]


def test_positions_are_file_index_and_line_and_only_cut_files_are_counted(tmp_path):
    """Three shards (one cut into chunks): every row's position is (file index, line in its file), the counting
    pass touches only the cut file's chunks before its last, and the error line numbers follow the file."""
    sizes = {"a.csv": 5, "b.csv": 400, "c.csv": 7}
    for name, n in sizes.items():
        (tmp_path / name).write_text("userId,movieId,rating,timestamp\n" +
                                     "".join(f"{i},{i + 1},{i % 5}.0,9\n" for i in range(n)))
    cfg = config("dataset.name=movielens", f"dataset.path={tmp_path}", "model.name=mf")
    files = input_files(cfg)
    chunks = plan_text_chunks(files, True, chunk_bytes=1024)
    counted = needs_counting(chunks)
    assert {c.path.rsplit("/", 1)[1] for c in counted} == {"b.csv"} and len(counted) == sum(
        c.path.endswith("b.csv") for c in chunks) - 1 >= 2
    layout, _, labels, positions, bad, _ = read_all(cfg, chunk_bytes=1024)
    expected = np.concatenate([(f << LINE_BITS) + np.arange(n) for f, n in enumerate(sizes.values())])
    assert bad == 0 and np.array_equal(positions, expected)
    assert labels.tolist() == [float(i % 5) for n in sizes.values() for i in range(n)]
    placed = assign_positions(chunks, {c.index: count_chunk_lines(c) for c in counted}, True)
    b_chunks = [c for c in placed if c.path.endswith("b.csv")]
    assert b_chunks[0].first_line == 2 and all(  # line 1 is the header
        nxt.first_line == c.first_line + count_chunk_lines(c) for c, nxt in zip(b_chunks, b_chunks[1:]))


def test_header_mismatch_between_shards(tmp_path):
    (tmp_path / "a.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n")
    (tmp_path / "b.csv").write_text("user,movie,rating,timestamp\n1,2,3.0,4\n")
    from autosrh_ray.data.errors import DataError

    with pytest.raises(DataError, match=r"b\.csv:1: header differs"):
        layout_for(config("dataset.name=movielens", f"dataset.path={tmp_path}", "model.name=mf"),
                   input_files(config("dataset.name=movielens", f"dataset.path={tmp_path}", "model.name=mf")))


def test_layout_is_plain_data():
    assert Layout("x", "text").categorical_fields == []
