"""The Ray Data vocabulary, ids and encoded shards equal a brute-force Python count (1 and 4 input shards, each
row placed by its file and line), and the split does not depend on chunks or ray.init(num_cpus=...)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autosrh_ray.data.prepare import prepare
from autosrh_ray.engine.features import FeatureSpace

from .helpers import brute_force_ids, config, criteo_fields, csv_rows, encode_rows, read_lines, splits, write_shards
from tests.conftest import shared_sample

MIN_COUNT = 2  # > 1 so OOV features hold real mass; the sample has many frequency ties


@pytest.fixture(scope="module")
def criteo_lines():
    return read_lines(shared_sample("criteo/dac_sample.txt"))


@pytest.fixture(scope="module")
def criteo_reference(criteo_lines):
    """Brute force on the csv module, for the input as 1 and as 4 shards: the global id table and every split's
    encoded ids and labels."""
    import csv

    rows = list(csv.reader(criteo_lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    tokens = [criteo_fields(r) for r in rows]
    names = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    labels = np.array([float(r[0]) for r in rows], dtype=np.float32)
    out = []
    for shards in (1, 4):
        split = splits(len(rows), shards=shards)
        table, value_ids, oov_ids = brute_force_ids(names, tokens, split == 0, MIN_COUNT)
        ids = encode_rows(tokens, value_ids, oov_ids)
        out.append((table, {name: (ids[split == code], labels[split == code])
                            for code, name in enumerate(("train", "valid", "test"))}))
    return out


def _prepare(tmp: Path, lines, shards: int, chunk_bytes: int, name: str):
    paths = write_shards(lines, tmp / f"in-{name}", shards, gzip_every=2 if shards > 1 else 0)
    cfg = config("dataset.name=criteo", f"dataset.path={paths[0].parent}", "model.name=fm",
                 f"dataset.min_count={MIN_COUNT}")
    return prepare(cfg, tmp / f"out-{name}", chunk_bytes=chunk_bytes)


@pytest.fixture(scope="module")
def prepared_1_and_4(ray_cluster, tmp_path_factory, criteo_lines):
    tmp = tmp_path_factory.mktemp("vocab")
    return (_prepare(tmp, criteo_lines, 1, 1 << 30, "one"),      # one shard, one chunk
            _prepare(tmp, criteo_lines, 4, 1 << 17, "four"))     # 4 shards (2 gzipped), many chunks


@pytest.mark.parametrize("which", [0, 1], ids=["1-shard", "4-shards"])
def test_vocabulary_equals_brute_force(prepared_1_and_4, criteo_reference, which):
    prepared = prepared_1_and_4[which]
    table, reference = criteo_reference[which]
    freq = pq.read_table(Path(prepared.directory) / "frequencies.parquet").to_pydict()
    assert freq["id"] == list(range(len(table)))
    got = list(zip(freq["field"], freq["value"], freq["kind"], freq["frequency"]))
    assert got == table  # ids in frequency order (ties included), OOV features, frequencies
    assert any(kind == "oov" and f > 0 for _, _, kind, f in got)
    for split, (ids, labels) in reference.items():
        loaded = prepared.load_split(split)
        assert np.array_equal(loaded.ids, ids), split  # OOV mapping and split membership, row by row
        assert np.array_equal(loaded.labels, labels), split
        assert np.all(loaded.values == 1.0)
    meta = json.loads((Path(prepared.directory) / "meta.json").read_text())
    assert meta["num_features"] == len(table)
    assert sum(meta["vocab_sizes"].values()) == len(table) and len(meta["vocab_sizes"]) == 39
    rows = meta["rows"]
    assert rows["read"] == 8184 == rows["train"] + rows["valid"] + rows["test"] and rows["skipped"] == 0
    assert rows["train"] == len(reference["train"][1])
    assert prepared.label_mean == pytest.approx(float(reference["train"][1].astype(np.float64).mean()))
    assert FeatureSpace.load(prepared.directory).num_features == len(table)


def test_split_independent_of_chunks_and_cpus(prepared_1_and_4, criteo_lines, tmp_path):
    one, four = prepared_1_and_4
    assert one.shards != four.shards and len(four.shards["train"]) > len(one.shards["train"])
    # A fresh Ray with a different CPU count, the same 4 shards cut into other chunks: the same rows land in the
    # same splits.
    paths = write_shards(criteo_lines, tmp_path / "in", 4, gzip_every=2)
    script = (
        "import logging, ray, sys\n"
        "from autosrh_ray.config import load_config\n"
        "from autosrh_ray.data.prepare import prepare\n"
        "ray.init(address=\"local\", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR)\n"
        "ray.data.DataContext.get_current().enable_progress_bars = False\n"
        f"cfg = load_config(None, ['dataset.name=criteo', 'dataset.path={paths[0].parent}', 'model.name=fm',"
        f" 'dataset.min_count={MIN_COUNT}'])\n"
        f"prepare(cfg, sys.argv[1], chunk_bytes={300_000})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], check=True, cwd=Path(__file__).parents[2],
                   capture_output=True, timeout=300)
    from autosrh_ray.data.prepared import PreparedData

    other = PreparedData.load(tmp_path / "out")
    for split in ("train", "valid", "test"):
        b, c = four.load_split(split), other.load_split(split)
        assert np.array_equal(b.ids, c.ids) and np.array_equal(b.labels, c.labels), split
    assert four.rows == other.rows and four.rows.read == one.rows.read


def test_avazu_vocabulary_equals_brute_force(ray_cluster, tmp_path):
    """Derived hour fields and a header format through the whole Ray path."""
    import datetime

    path = shared_sample("avazu/train_sample.csv")
    header, rows = csv_rows(path, ",", header=True)
    hour, click = header.index("hour"), header.index("click")
    others = [j for j, c in enumerate(header) if c not in ("id", "click", "hour")]
    names = ["hour_of_day", "weekday"] + [header[j] for j in others]

    def tokens(r):
        h = r[hour]
        day = datetime.date(2000 + int(h[:2]), int(h[2:4]), int(h[4:6]))
        return [str(int(h[6:])), str(day.weekday())] + [r[j] for j in others]

    toks = [tokens(r) for r in rows]
    split = splits(len(rows))
    table, value_ids, oov_ids = brute_force_ids(names, toks, split == 0, 3)
    cfg = config("dataset.name=avazu", f"dataset.path={path}", "model.name=fm", "dataset.min_count=3")
    prepared = prepare(cfg, tmp_path / "out", chunk_bytes=1 << 18)
    freq = pq.read_table(Path(prepared.directory) / "frequencies.parquet").to_pydict()
    assert list(zip(freq["field"], freq["value"], freq["kind"], freq["frequency"])) == table
    ids = encode_rows(toks, value_ids, oov_ids)
    assert np.array_equal(prepared.load_split("test").ids, ids[split == 2])
    assert prepared.load_split("train").labels.tolist() == [float(r[click]) for r, s in zip(rows, split) if s == 0]


def test_hash_partitions_put_each_key_in_one_place_and_spread_keys():
    import pyarrow as pa

    from autosrh_ray.data.statistics_shards import partition_of

    rng = np.random.default_rng(0)
    values = [f"{x:08x}" for x in rng.integers(0, 2**31, 20_000)] + ["", "é", "a" * 300]
    fields = rng.integers(0, 26, len(values)).astype(np.int32)
    parts = partition_of(fields, pa.array(values), 5)
    again = partition_of(fields[::-1].copy(), pa.array(values[::-1]), 5)[::-1]  # another chunk, other order
    assert np.array_equal(parts, again)
    assert parts.min() >= 0 and parts.max() < 5
    assert np.bincount(parts[:20_000], minlength=5).min() > 0.8 * 20_000 / 5  # about even
    same_value_other_field = partition_of(np.array([0, 1], np.int32), pa.array(["x", "x"]), 1 << 20)
    assert same_value_other_field[0] != same_value_other_field[1]


@pytest.mark.parametrize("parts", [0, 3])
def test_sharded_counts_fold_min_count_as_one_count_of_everything(ray_cluster, parts):
    """Chunk tables with overlapping keys, merged in 3 shard actors (or in this process): the kept rows are the
    keys whose total reaches min_count with their totals, the folded rows per field the rest's totals."""
    from collections import Counter

    import pyarrow as pa

    from autosrh_ray.data.statistics_shards import ShardedCounts
    from autosrh_ray.data.vocabulary import STATS_SCHEMA

    rng = np.random.default_rng(1)
    total: Counter = Counter()
    shards = ShardedCounts(parts, num_fields=4)
    for _ in range(6):  # chunks
        keys = Counter(zip(rng.integers(0, 4, 3000).tolist(), [f"v{x}" for x in rng.zipf(1.5, 3000) % 500]))
        total.update(keys)
        fields, values = zip(*keys)
        n = len(keys)
        shards.add(pa.table({"field": pa.array(fields, pa.int32()), "value": pa.array(values),
                             "count": pa.array(list(keys.values()), pa.int64()), **{
                                 c: pa.array(np.zeros(n)) for c in ("sum", "sumsq", "min", "max")}},
                            schema=STATS_SCHEMA))
    folded = shards.fold(min_count=4)
    kept = {(f, v): c for f, v, c in zip(*(folded.kept.column(c).to_pylist() for c in ("field", "value", "count")))}
    assert kept == {k: c for k, c in total.items() if c >= 4}
    expected = np.zeros(4, np.int64)
    for (f, _), c in total.items():
        if c < 4:
            expected[f] += c
    assert np.array_equal(folded.folded, expected) and expected.sum() > 0
    assert folded.distinct == len(total)
