"""Criteo-profile generator: its expected distinct counts hit Criteo Kaggle's at 45.84M rows and the generated
rows follow them at 200k; ~25% positives, missing numbers, planted signal; shards are the same bytes for any shard
count; ``autosrh-ray generate criteo`` writes gzip shards the Criteo reader parses."""
from __future__ import annotations

import gzip
import math
import re

import numpy as np
import pytest

from autosrh_ray.cli import main
from autosrh_ray.data import criteo_profile
from autosrh_ray.data.criteo_profile import (CATEGORICAL, KAGGLE_ROWS, NUMERIC_MISSING, NUMERICAL, PROFILE,
                                             SIGNAL_FIELDS, TARGET_DISTINCT, CriteoProfile, calibration_table,
                                             expected_distinct, expected_kept, field_expected_distinct,
                                             rank_probabilities)
from autosrh_ray.data.generate import write_criteo_profile_shards
from autosrh_ray.data.inputs import list_files, placed_text_chunks
from autosrh_ray.data.readers import layout_for, parse_chunk
from autosrh_ray.engine.metrics import auc

from .helpers import config

ROWS = 200_000


@pytest.fixture(scope="module")
def sample():
    """The first ROWS rows as arrays (ranks, labels, numbers, missing) and the generator."""
    gen = CriteoProfile()
    parts = [block for _, block in gen.blocks(0, ROWS)]
    return gen, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _text(paths) -> bytes:
    return b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in paths)


def test_expected_distinct_at_45m_rows_is_criteo_kaggles():
    expected = expected_distinct(KAGGLE_ROWS)
    assert np.all(np.abs(expected / np.array(TARGET_DISTINCT) - 1) < 0.001), expected
    kept = expected_kept(KAGGLE_ROWS, 10).sum()  # min_count 10 keeps Criteo's order of a million values
    assert 0.8e6 < kept < 1.5e6, kept
    smaller = expected_distinct(2_000_000)  # fewer distinct values at fewer rows
    assert np.all(smaller <= expected + 1e-6) and smaller.sum() < 0.1 * expected.sum()
    assert calibration_table() in criteo_profile.__doc__  # the documented table is the module's


def test_expected_distinct_equals_the_full_sum_and_the_law_sums_to_one():
    for vocab, s in ((1_000_000, 1.1), (300_000, 1.0), (500_000, 1.6)):
        p = rank_probabilities(np.arange(1, vocab + 1), vocab, s)
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        exact = float(np.sum(-np.expm1(2_000_000 * np.log1p(-p))))
        assert field_expected_distinct(2_000_000, vocab, s) == pytest.approx(exact, rel=1e-6)


def test_distinct_counts_of_200k_rows_follow_the_expected_counts(sample):
    gen, rows = sample
    expected = expected_distinct(ROWS)
    for f, name in enumerate(CATEGORICAL):
        ranks = rows["ranks"][:, f]
        assert ranks.min() >= 0 and ranks.max() < PROFILE[f][0]
        seen = len(np.unique(ranks))
        # the distinct count's variance is below its mean: 4 sigma (1.3% at C3's 102k values)
        assert abs(seen - expected[f]) <= 4 * math.sqrt(expected[f]) + 2, (name, seen, expected[f])
        tokens = gen.tokens(rows["ranks"][:, f:f + 1], np.array([f]))
        assert len(np.unique(tokens)) == seen, name  # one token per rank


def test_every_value_of_each_whole_vocabulary_field_appears_at_200k_rows(sample):
    """The fields that use their whole vocabulary (V_f < 1,000, s_f = 1) show exactly V_f distinct values at 200k
    rows, ranks 0 … V_f - 1, the last one included: the chance that some value is missing is below 1e-12 by the
    law itself (Σ_k (1 - p_k)^N, computed here in float64)."""
    _, rows = sample
    whole = [f for f, (vocab, s) in enumerate(PROFILE) if s == 1.0]
    assert len(whole) == 11 and all(PROFILE[f][0] < 1000 for f in whole)
    for f in whole:
        vocab = PROFILE[f][0]
        k = np.arange(1, vocab + 1, dtype=np.float64)
        p = np.log1p(1.0 / k) / math.log(vocab + 1.0)  # P(rank = k - 1) for s = 1
        assert np.sum(np.exp(ROWS * np.log1p(-p))) < 1e-12, CATEGORICAL[f]
        seen = np.unique(rows["ranks"][:, f])
        assert len(seen) == vocab and seen[0] == 0 and seen[-1] == vocab - 1, (CATEGORICAL[f], len(seen), vocab)


def test_the_seed_changes_the_rows_not_only_the_tokens():
    """Ranks, numbers, missing flags and labels are drawn from the seed's own streams: two seeds give different
    rows (C3's 10^8-value ranks agree about as often as two independent draws do), one seed the same rows."""
    n = 5000
    for b in (0, 1):
        a, same, other = CriteoProfile(3).block(b, n), CriteoProfile(3).block(b, n), CriteoProfile(4).block(b, n)
        assert all(np.array_equal(a[key], same[key]) for key in a)
        for key in ("ranks", "numbers", "missing"):
            assert not np.array_equal(a[key], other[key]), (b, key)
        c3 = CATEGORICAL.index("C3")
        agree = np.mean(a["ranks"][:, c3] == other["ranks"][:, c3])
        vocab, s = PROFILE[c3]
        p = rank_probabilities(np.arange(1, 1_000_001), vocab, s)
        collision = float(np.sum(p * p))  # P(two independent draws agree), the head of the sum (the rest is tiny)
        assert agree < 3 * collision + 0.01, (agree, collision)
        assert np.mean(a["label"] != other["label"]) > 0.2  # labels drawn apart too (~37.5% when independent)


def test_labels_and_numbers_look_like_criteo(sample):
    _, rows = sample
    assert abs(rows["label"].mean() - 0.25) < 0.01
    missing = rows["missing"].mean(axis=0)
    assert np.allclose(missing, NUMERIC_MISSING, atol=0.005), missing
    assert rows["missing"].any() and rows["numbers"].min() >= 0


def test_the_planted_signal_is_in_the_signal_fields_top_values(sample):
    gen, rows = sample
    label = rows["label"]

    def spread(field: str) -> float:
        """Largest gap between the label rates of the field's values seen >= 3000 times."""
        ranks = rows["ranks"][:, CATEGORICAL.index(field)]
        values, counts = np.unique(ranks, return_counts=True)
        rates = [label[ranks == v].mean() for v in values[counts >= 3000]]
        return max(rates) - min(rates)

    for field in ("C1", "C2", "C6", "C14", "C17"):
        assert field in SIGNAL_FIELDS and spread(field) > 0.15, field
    for field in ("C5", "C9", "C20", "C22", "C23"):
        assert field not in SIGNAL_FIELDS and spread(field) < 0.04, field
    # the true logit ranks labels well: what a model can learn is there
    assert auc(label.astype(np.float64), gen.logit(rows)) > 0.75


def test_shards_are_the_same_bytes_for_any_shard_count(tmp_path):
    rows = 66_000  # past the first block
    one = write_criteo_profile_shards(tmp_path / "one", rows, 1)
    three = write_criteo_profile_shards(tmp_path / "three", rows, 3, gzip=True, processes=2)
    assert [p.name for p in three] == ["part-00000.txt.gz", "part-00001.txt.gz", "part-00002.txt.gz"]
    text = _text(one)
    gen = CriteoProfile()
    assert text == _text(three) == gen.text(0, rows)
    assert gen.text(1000, 65_900) == b"".join(text.splitlines(keepends=True)[1000:65_900])
    lines = text.decode().splitlines()
    assert len(lines) == rows and all(line.count("\t") == 39 for line in lines[:2000])
    fields = lines[12345].split("\t")
    assert fields[0] in ("0", "1") and all(re.fullmatch(r"[0-9a-f]{8}", c) for c in fields[14:])
    assert all(c == "" or c.isdigit() for c in fields[1:14])
    assert CriteoProfile(seed=1).text(0, 10) != gen.text(0, 10)
    whole, prefix = gen.block(1), gen.block(1, 500)  # a block's first rows are drawn alone, the same
    assert all(np.array_equal(whole[k][:500], prefix[k]) for k in whole)


def test_cli_generate_criteo_writes_gzip_shards_the_criteo_reader_parses(tmp_path, capsys):
    out = tmp_path / "criteo"
    assert main(["generate", "criteo", "--rows", "1000", "--output", str(out), "--shards", "2", "--gzip"]) == 0
    assert "1000 Criteo-profile rows in 2 shards" in capsys.readouterr().out
    files = list_files(str(out))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["part-00000.txt.gz", "part-00001.txt.gz"]
    layout = layout_for(config("dataset.name=criteo", f"dataset.path={out}"), files)
    parsed = [p for chunk in placed_text_chunks(files, header=False) for p in parse_chunk(layout, chunk)]
    assert sum(p.num_rows for p in parsed) == 1000 and not any(len(p.bad_positions) for p in parsed)
    labels = np.concatenate([p.labels for p in parsed])
    assert set(np.unique(labels)) <= {0.0, 1.0}
    i12 = np.concatenate([p.columns["I12"].to_numpy(zero_copy_only=False) for p in parsed])
    assert abs(np.isnan(i12).mean() - NUMERIC_MISSING[NUMERICAL.index("I12")]) < 0.06  # empty = missing
    present = i12[~np.isnan(i12)]
    assert np.all(present >= 0) and np.all(present == np.floor(present))
    c3 = [v for p in parsed for v in p.columns["C3"].to_pylist()]
    assert len(c3) == 1000 and all(re.fullmatch(r"[0-9a-f]{8}", v) for v in c3)
    assert _text(sorted(out.iterdir())) == CriteoProfile().text(0, 1000)


def test_cli_generate_keeps_the_config_form_and_refuses_set_with_criteo(tmp_path, capsys):
    assert main(["generate", "workflows/quickstart.yaml", "--rows", "300", "--output", str(tmp_path / "syn"),
                 "--processes", "1"]) == 0
    lines = (tmp_path / "syn" / "part-00000.txt").read_text().splitlines()
    assert len(lines) == 300 and all(len(line.split("\t")) == 40 for line in lines)
    assert main(["generate", "criteo", "--rows", "10", "--output", str(tmp_path / "c"), "--set", "a=1"]) == 2
    assert "--set" in capsys.readouterr().err
