"""prepare(): the Ray path equals the in-process reference, reuses its output, streams splits, and fails
with one clear line on missing files, empty input and unknown columns."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from autosrh_ray.config import ConfigError
from autosrh_ray.data.errors import DataError
from autosrh_ray.data.local import prepare_synthetic, prepare_table
from autosrh_ray.data.prepare import prepare
from autosrh_ray.data.prepared import split_from_columns
from autosrh_ray.data.streaming import AssembleRows, split_datasets
from autosrh_ray.distributed.sources import TRAIN, VALID, VALID_EVAL, train_datasets

from .helpers import config


def _assert_same(a, b, value_tol: float = 0.0):
    assert a.num_features == b.num_features
    assert a.features.feature_values == b.features.feature_values
    assert np.array_equal(a.features.frequencies, b.features.frequencies)
    assert a.rows.read == b.rows.read and a.rows.train == b.rows.train and a.rows.test == b.rows.test
    assert a.config_hash == b.config_hash
    for split in ("train", "valid", "test"):
        x, y = a.load_split(split), b.load_split(split)
        assert np.array_equal(x.ids, y.ids), split
        assert np.array_equal(x.labels, y.labels), split
        np.testing.assert_allclose(x.values, y.values, rtol=0, atol=value_tol)


@pytest.fixture(scope="module")
def synthetic(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("syn")
    cfg = config("dataset.synthetic.rows=30000")
    return cfg, tmp, prepare(cfg, tmp / "ray", synthetic_rows_per_chunk=4096)


def test_synthetic_equals_in_process_reference(synthetic):
    cfg, tmp, prepared = synthetic
    assert len(prepared.shards["train"]) > 1
    reference = prepare_synthetic(cfg, tmp / "local")
    _assert_same(prepared, reference, value_tol=1e-6)
    assert prepared.label_mean == pytest.approx(reference.label_mean, rel=1e-6)


def test_reuse_and_recompute(synthetic, monkeypatch):
    cfg, tmp, prepared = synthetic
    meta = (tmp / "ray" / "meta.json").stat().st_mtime_ns
    import autosrh_ray.data.prepare as module

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(module, "count_statistics", boom)
    again = prepare(cfg, tmp / "ray")
    assert (tmp / "ray" / "meta.json").stat().st_mtime_ns == meta
    assert again.rows == prepared.rows and again.shards == prepared.shards
    with pytest.raises(AssertionError, match="recomputed"):  # another config must not reuse it
        prepare(config("dataset.synthetic.rows=30000", "dataset.min_count=3"), tmp / "ray")


def test_split_datasets_stream_the_shards(synthetic):
    _, _, prepared = synthetic
    datasets = split_datasets(prepared)
    assert set(datasets) == {"train", "valid", "test"}
    f = prepared.features.num_fields
    total = 0
    for batch in datasets["valid"].iter_batches(batch_size=1000, batch_format="numpy"):
        part = split_from_columns(batch, f)
        assert part.ids.shape == (len(part), f) and part.ids.dtype == np.int64
        total += len(part)
    assert total == prepared.rows.valid
    assert datasets["train"].count() == prepared.rows.train
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:  # with preserve_order the stream is the shards in input order
        labels = np.concatenate([b["label"] for b in split_datasets(prepared)["train"].iter_batches(batch_format="numpy")])
    finally:
        ctx.execution_options.preserve_order = saved
    assert np.array_equal(labels, prepared.load_split("train").labels)


def _rows(ids, values, labels) -> np.ndarray:
    """Rows as one float64 matrix sorted lexicographically (a multiset of rows, order removed)."""
    m = np.column_stack([ids.astype(np.float64), values.astype(np.float64), labels.astype(np.float64)])
    return m[np.lexsort(m.T[::-1])]


def test_assemble_rows_stacks_fields_and_permutes_within_the_window():
    rng = np.random.default_rng(0)
    ids, values, labels = rng.integers(0, 50, (500, 3)), rng.random((500, 3), np.float32), rng.random(500, np.float32)
    columns = {f"id{i}": ids[:, i] for i in range(3)}
    columns.update({f"value{i}": values[:, i] for i in range(3)})
    columns["label"] = labels
    kept = AssembleRows(3)(columns)
    assert np.array_equal(kept["ids"], ids) and np.array_equal(kept["values"], values)
    assert np.array_equal(kept["label"], labels)
    shuffled = AssembleRows(3, shuffle=True)(columns)
    assert not np.array_equal(shuffled["label"], labels)  # a 500-row identity permutation: p = 1/500!
    assert np.array_equal(_rows(shuffled["ids"], shuffled["values"], shuffled["label"]), _rows(ids, values, labels))
    narrow = AssembleRows(3, narrow_ids=True)(columns)["ids"]
    assert narrow.dtype == np.int32 and np.array_equal(narrow, ids)


def test_train_datasets_give_every_row_once_per_epoch_in_a_new_order(synthetic):
    _, _, prepared = synthetic
    datasets = train_datasets(prepared, alpha_rows="validation", shuffle_window=4096, seed=3)
    assert set(datasets) == {TRAIN, VALID, VALID_EVAL}
    expected = {s: prepared.load_split(s) for s in ("train", "valid")}

    def epoch(name):
        b = [c for c in datasets[name].iter_batches(batch_size=1000, batch_format="numpy")]
        return tuple(np.concatenate([c[k] for c in b]) for k in ("ids", "values", "label"))

    first, second = epoch(TRAIN), epoch(TRAIN)
    truth = _rows(expected["train"].ids, expected["train"].values, expected["train"].labels)
    for ids, values, labels in (first, second):
        assert ids.shape == (prepared.rows.train, prepared.features.num_fields) and ids.dtype == np.int32
        assert np.array_equal(_rows(ids, values, labels), truth)
    assert not np.array_equal(first[2], second[2]) and not np.array_equal(first[2], expected["train"].labels)
    for name in (VALID, VALID_EVAL):
        ids, values, labels = epoch(name)
        v = expected["valid"]
        assert np.array_equal(_rows(ids, values, labels), _rows(v.ids, v.values, v.labels))


def test_empty_split_is_an_empty_dataset(ray_cluster, tmp_path):
    prepared = prepare(config("dataset.synthetic.rows=2000", "dataset.split=[0.9, 0.1, 0.0]"), tmp_path / "out")
    assert prepared.rows.test == 0 and split_datasets(prepared)["test"].count() == 0


def test_tabular_csv_scale_equals_reference(ray_cluster, tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    table = pa.table({
        "y": rng.integers(0, 2, n), "city": rng.choice(["a", "b", "c", "d,e"], n),
        "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 9, n).round(2)), "noise": rng.random(n)})
    path = tmp_path / "t.csv"
    pacsv.write_csv(table, path)
    text = path.read_text().replace("nan", "")  # missing numbers as empty fields
    path.write_text(text)
    cfg = config("dataset.name=tabular", f"dataset.path={path}", "dataset.label=y", "dataset.categorical=[city]",
                 "dataset.numerical=[age, noise]", "model.name=fm")
    prepared = prepare(cfg, tmp_path / "ray", chunk_bytes=10_000)
    reference_table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"city": pa.string()}))
    reference = prepare_table(reference_table, "y", ["city"], ["age", "noise"], cfg, tmp_path / "local")
    _assert_same(prepared, reference, value_tol=1e-5)
    assert [s.kind for s in prepared.features.fields] == ["numerical", "numerical", "categorical"]


def test_missing_input_is_a_config_error(ray_cluster, tmp_path):
    cfg = config("dataset.synthetic.rows=100")
    cfg.dataset.name, cfg.dataset.path = "criteo", str(tmp_path / "nope*.txt")
    with pytest.raises(ConfigError, match=r"^dataset\.path: no input file matches"):
        prepare(cfg, tmp_path / "out")


def test_empty_input_is_a_data_error(ray_cluster, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    cfg = config("dataset.name=criteo", f"dataset.path={tmp_path / 'empty.txt'}", "model.name=fm")
    with pytest.raises(DataError, match="no data rows"):
        prepare(cfg, tmp_path / "out")


def test_unknown_column_names_the_key(ray_cluster, tmp_path):
    (tmp_path / "t.csv").write_text("y,a\n1,p\n")
    cfg = config("dataset.name=tabular", f"dataset.path={tmp_path / 't.csv'}", "dataset.label=y",
                 "dataset.categorical=[a, b]", "model.name=fm")
    with pytest.raises(ConfigError, match=r"^dataset\.categorical: column 'b' not found in .*t\.csv"):
        prepare(cfg, tmp_path / "out")


def test_changed_input_is_prepared_again(ray_cluster, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("y,a\n" + "".join(f"{i % 2},v{i % 5}\n" for i in range(200)))
    cfg = config("dataset.name=tabular", f"dataset.path={path}", "dataset.label=y", "dataset.categorical=[a]",
                 "model.name=fm")
    first = prepare(cfg, tmp_path / "out")
    with path.open("a") as fh:
        fh.write("1,v9\n")
    second = prepare(cfg, tmp_path / "out")
    assert (first.rows.read, second.rows.read) == (200, 201)
    assert first.input_fingerprint != second.input_fingerprint
