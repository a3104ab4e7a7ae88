"""Scale generator: Criteo-format shards that read back as the synthetic dataset, whatever the shard count; the
Criteo-profile shards are the rows of the generator with the seed given to the writer or to ``autosrh-ray generate
criteo --seed``."""
from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest

from autosrh_ray.cli import main
from autosrh_ray.config import ConfigError, SyntheticConfig
from autosrh_ray.data.criteo_profile import CriteoProfile
from autosrh_ray.data.generate import criteo_shape, write_criteo_profile_shards, write_criteo_shards
from autosrh_ray.data.prepare import prepare
from autosrh_ray.data.synthetic import SyntheticGenerator

from .helpers import config

ROWS = 6000


def _text(paths) -> str:
    return "".join(gzip.decompress(p.read_bytes()).decode() if p.suffix == ".gz" else p.read_text() for p in paths)


def test_shards_concatenate_to_the_same_rows(tmp_path):
    cfg = SyntheticConfig(numerical_fields=3, categorical_fields=4, signal_fields=2, vocab_size=50)
    one = write_criteo_shards(cfg, tmp_path / "one", ROWS, 1)
    three = write_criteo_shards(cfg, tmp_path / "three", ROWS, 3, gzip=True)
    assert [p.name for p in three] == ["part-00000.txt.gz", "part-00001.txt.gz", "part-00002.txt.gz"]
    text = _text(one)
    assert text == _text(three)
    lines = text.splitlines()
    assert len(lines) == ROWS and all(len(line.split("\t")) == 40 for line in lines)
    table = SyntheticGenerator(replace(cfg, rows=ROWS)).table()
    cols = [line.split("\t") for line in lines]
    assert [int(c[0]) for c in cols] == table.column("label").to_pylist()
    i2 = [None if v is None else str(int(v)) for v in table.column("I2").to_pylist()]
    assert [c[2] or None for c in cols] == i2  # missing numbers are empty fields
    assert [c[15] for c in cols] == table.column("C2").to_pylist()
    assert all(c[5] == "" and c[39] == "" for c in cols)  # Criteo columns the shape lacks are missing


def test_generated_criteo_prepares_like_the_synthetic_dataset(ray_cluster, tmp_path):
    """Text round trip through the Criteo reader == the synthetic dataset generated inside the read tasks (one
    file, cut into chunks: its positions are its line numbers, as the generator's are its row numbers)."""
    shape = ["dataset.synthetic.numerical_fields=13", "dataset.synthetic.categorical_fields=26",
             "dataset.synthetic.vocab_size=200", f"dataset.synthetic.rows={ROWS}", "dataset.numeric=bucketize"]
    syn_cfg = config(*shape)
    paths = write_criteo_shards(syn_cfg.dataset.synthetic, tmp_path / "raw", ROWS, 1)
    criteo = prepare(config(*shape, "dataset.name=criteo", f"dataset.path={paths[0].parent}", "model.name=fm"),
                     tmp_path / "criteo", chunk_bytes=200_000)
    synthetic = prepare(syn_cfg, tmp_path / "synthetic", synthetic_rows_per_chunk=2048)
    assert criteo.features.feature_values == synthetic.features.feature_values
    assert np.array_equal(criteo.features.frequencies, synthetic.features.frequencies)
    for split in ("train", "valid", "test"):
        a, b = criteo.load_split(split), synthetic.load_split(split)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels), split


def test_shape_must_fit_criteo(tmp_path):
    with pytest.raises(ConfigError, match="^dataset.synthetic.categorical_fields: must be <= 26"):
        write_criteo_shards(SyntheticConfig(categorical_fields=27, signal_fields=2), tmp_path, 10, 1)
    assert criteo_shape(SyntheticConfig()).categorical_fields == 26


def _numbers_and_labels(text: str) -> list[list[str]]:
    """Each line's label and I1-I13 (the columns a seed's rows differ in apart from the tokens' salt)."""
    return [line.split("\t")[:14] for line in text.splitlines()]


def test_criteo_profile_writer_uses_its_seed(tmp_path):
    rows = 700
    texts = {}
    for seed, shards, processes in ((0, 1, 1), (5, 1, 1), (5, 2, 2)):  # (5, 2, 2): the seed through the pool
        paths = write_criteo_profile_shards(tmp_path / f"s{seed}-{shards}", rows, shards, processes=processes,
                                            seed=seed)
        texts[seed, shards] = _text(paths)
    assert texts[5, 1] == texts[5, 2] == CriteoProfile(5).text(0, rows).decode()
    assert texts[0, 1] == CriteoProfile(0).text(0, rows).decode()
    assert _numbers_and_labels(texts[0, 1]) != _numbers_and_labels(texts[5, 1])


def test_cli_generate_criteo_seed_gives_other_rows_and_the_same_seed_the_same(tmp_path, capsys):
    def generate(seed, name: str) -> str:
        out = tmp_path / name
        seeded = [] if seed is None else ["--seed", str(seed)]
        assert main(["generate", "criteo", "--rows", "500", *seeded, "--output", str(out), "--shards", "2"]) == 0
        return _text(sorted(out.iterdir()))

    seven, seven_again, eight = generate(7, "a"), generate(7, "b"), generate(8, "c")
    assert seven == seven_again == CriteoProfile(7).text(0, 500).decode()
    assert eight == CriteoProfile(8).text(0, 500).decode()
    assert _numbers_and_labels(seven) != _numbers_and_labels(eight)
    assert generate(None, "default") == CriteoProfile(0).text(0, 500).decode() != seven  # no --seed: seed 0
    assert "500 Criteo-profile rows in 2 shards" in capsys.readouterr().out
