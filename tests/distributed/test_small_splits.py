"""A split smaller than one batch (``train.batch_size``) is not an error on the Ray Train path: each worker uses
its whole (equal) share as one smaller batch, so every rank still makes the same steps. Only a split with fewer
rows than workers stops the run, and a batch that does not divide across the workers stops it at config load,
before any data is prepared."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from autosrh_ray.config import ConfigError, load_config
from autosrh_ray.data.streaming import IDS, LABEL, VALUES
from autosrh_ray.distributed.cache import Budget, KeptBatches
from autosrh_ray.distributed.sources import TRAIN, VALID, VALID_EVAL, InMemorySource, RayDataSource, rows_per_pass
from autosrh_ray.distributed.stages import check_batch_against_splits

from .helpers import initial_state, prepared_small, small_config


class FakeShard:
    """A rank's share of a split, iterated as Ray Data's ``DataIterator.iter_batches`` does."""

    def __init__(self, rows: int, fields: int = 3, offset: int = 0):
        self.ids = np.arange(offset, offset + rows * fields).reshape(rows, fields)
        self.labels = (np.arange(rows) % 2).astype(np.float32)
        self.passes = 0

    def iter_batches(self, batch_size, batch_format, drop_last, prefetch_batches):
        self.passes += 1
        n = len(self.labels)
        for start in range(0, n - n % batch_size if drop_last else n, batch_size):
            s = slice(start, start + batch_size)
            yield {IDS: self.ids[s], VALUES: self.ids[s].astype(np.float32), LABEL: self.labels[s]}


def _source(shards: dict, local_batch: int, **kwargs) -> RayDataSource:
    return RayDataSource(local_batch, 0, 0, 3, shard=lambda name: shards[name], **kwargs)


def _take(stream, n):
    return [next(stream) for _ in range(n)]


@pytest.mark.parametrize("known", [True, False])
def test_a_short_validation_share_is_one_batch_whether_known_or_found_streaming(known):
    valid = FakeShard(21)  # this rank's share: 21 rows, fewer than the local batch of 32
    source = _source({VALID: valid}, 32, whole={VALID} if known else set(), budget=Budget(1 << 20))
    batches = _take(source.valid_stream(), 4)
    assert [len(b) for b in batches] == [21] * 4  # every α step gets the whole share
    assert VALID in source.whole
    # known or found short on its first pass (which reads the remainder too): one pass, replayed from memory
    assert valid.passes == 1


def test_a_validation_share_with_full_batches_still_drops_its_remainder():
    valid = FakeShard(70)
    source = _source({VALID: valid}, 32)
    assert [len(b) for b in _take(source.valid_stream(), 3)] == [32, 32, 32]
    assert VALID not in source.whole


@pytest.mark.parametrize("rows, share, reused", [(70, 70, True), (70, 0, False), (70, 69, False)])
def test_evaluation_replays_alphas_kept_pass_only_when_it_is_the_whole_share(rows, share, reused):
    """α's first pass keeps its remainder (6 rows here) without training on it; evaluation then replays that
    copy — every row of the share once — when it is this rank's exact share (``valid_share``) on all ranks."""
    valid, valid_eval = FakeShard(rows), FakeShard(rows)
    agreed = []
    source = _source({VALID: valid, VALID_EVAL: valid_eval}, 32, budget=Budget(1 << 20), valid_share=share,
                     agree=lambda ok: agreed.append(ok) or ok)
    stream = source.valid_stream()
    assert [len(b) for b in _take(stream, 4)] == [32] * 4  # two passes of full batches: the remainder is not α's
    evals = [sorted(map(tuple, torch.cat([b.ids for b in source.eval_batches()]).tolist())) for _ in range(2)]
    assert evals[0] == evals[1] == sorted(map(tuple, valid.ids.tolist()))  # every row once, remainder included
    assert valid.passes == 1 and valid_eval.passes == (0 if reused else 1)
    # asked whether α's copy serves (where α's stream is the whole split), then, for its own copy, whether to replay
    assert agreed == ([True] if reused or not share else [False, True])
    left = source.budget.bytes_left
    assert left == (1 << 20) - KeptBatches.nbytes(rows, 3) * (1 if reused else 2)  # one copy, or two


def test_an_empty_share_still_fails_with_its_reason():
    source = _source({VALID: FakeShard(0)}, 32)
    with pytest.raises(ValueError, match="no full local batch"):
        next(source.valid_stream())


@pytest.mark.parametrize("cache", [True, False])
def test_a_short_train_share_is_one_batch_per_pass_streamed_or_replayed(cache):
    train = FakeShard(21)
    rows = rows_per_pass(2 * 21 + 1, 64, 2)  # a 43-row split on 2 workers, global batch 64: the 21-row share
    assert rows == 21
    source = _source({TRAIN: train}, 32, train_rows=rows if cache else 0, budget=Budget(1 << 20 if cache else 0),
                     whole={TRAIN} if cache else set())
    epochs = [list(source.train_epoch(e)) for e in range(3)]
    assert [[len(b) for b in e] for e in epochs] == [[21]] * 3
    seen = [Counter(map(tuple, e[0].ids.tolist())) for e in epochs]
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 21  # every row once per pass
    assert train.passes == (1 if cache else 4)  # replayed from memory, or one empty pass then one each epoch


def test_rows_per_pass_is_full_batches_or_the_whole_share():
    assert rows_per_pass(1000, 128, 2) == 7 * 64  # 500 per rank: 7 full local batches of 64
    assert rows_per_pass(101, 128, 2) == 50  # 50 per rank, less than a local batch of 64: all of it
    assert rows_per_pass(1, 128, 2) == 0  # no row for one of the ranks


def test_in_memory_source_gives_equal_short_batches_to_every_rank():
    from autosrh_ray.data.prepared import EncodedSplit

    n = 7
    split = EncodedSplit(np.arange(n * 2).reshape(n, 2), np.zeros((n, 2), np.float32), np.zeros(n, np.float32))
    ranks = [InMemorySource(split, split, 16, rank, 2) for rank in range(2)]
    per_rank = [[len(b) for b in _take(r.valid_stream(), 3)] for r in ranks]
    assert per_rank == [[3, 3, 3], [3, 3, 3]]  # 6 of the 7 rows (a multiple of the 2 workers), split evenly
    assert [[len(b) for b in r.train_epoch(0)] for r in ranks] == [[3], [3]]


def _prepared(train: int, valid: int):
    return SimpleNamespace(rows=SimpleNamespace(train=train, valid=valid))


def test_a_split_smaller_than_the_batch_is_a_note_not_an_error():
    config = load_config(None, ["train.batch_size=2048", "ray.num_workers=2"])
    lines = []
    check_batch_against_splits(config, _prepared(16000, 2042), 2, lines.append)
    assert len(lines) == 1 and "valid split has 2042 rows" in lines[0] and "1021 per worker" in lines[0]
    lines.clear()
    check_batch_against_splits(config, _prepared(16000, 4000), 2, lines.append)
    assert lines == []


def test_a_split_with_fewer_rows_than_workers_names_the_workers():
    config = load_config(None, ["train.batch_size=2048", "ray.num_workers=2"])
    with pytest.raises(ConfigError, match=r"^ray.num_workers: the valid split has 1 rows, fewer than the 2 workers"):
        check_batch_against_splits(config, _prepared(16000, 1), 2, lambda _: None)


def test_a_batch_that_does_not_divide_across_workers_fails_at_config_load():
    with pytest.raises(ConfigError, match=r"^train.batch_size: must be divisible by ray.num_workers = 2"):
        load_config(None, ["train.batch_size=1025", "ray.num_workers=2"])
    assert load_config(None, ["train.batch_size=1025", "ray.num_workers=0"]).train.batch_size == 1025
    with pytest.raises(ConfigError, match=r"^tune.search_space.train.batch_size: value 1025"):  # a trial's too
        load_config(None, ["ray.num_workers=2", "tune.enabled=true",
                           "tune.search_space={train.batch_size: [1024, 1025]}"])


@pytest.mark.slow
def test_a_search_on_two_workers_with_a_batch_larger_than_the_validation_split(ray_cluster, tmp_path):
    """On Ray Data with two workers: the ~300-row validation split (α's stream) and a 512-row batch."""
    from autosrh_ray.distributed.stages import make_runner
    from autosrh_ray.engine.training import StopRule

    overrides = ["train.batch_size=512", "ray.num_workers=2", f"ray.storage_path={tmp_path / 'ray'}",
                 "run.name=small-splits", "ray.worker_cache_mb=0"]  # streamed: the short batch every pass
    config, prepared = prepared_small(tmp_path / "data", *overrides)
    assert prepared.rows.valid < 512 < prepared.rows.train
    lines = []
    runner = make_runner(small_config(*overrides), prepared, log=lines.append)
    result, _ = runner.train("search", initial_state(config, prepared), StopRule(max_epochs=2, patience=2))
    assert any("valid split" in line and "per worker" in line for line in lines)
    assert result.epochs == 2 and result.steps == 2 * (prepared.rows.train // 512)
    assert result.best_valid["rows"] == prepared.rows.valid  # evaluation still covers every validation row


def test_in_memory_source_streams_alpha_from_its_own_rows_and_evaluates_the_validation_split():
    from autosrh_ray.data.prepared import EncodedSplit

    def split(lo: int, n: int) -> EncodedSplit:
        return EncodedSplit(np.arange(lo, lo + n * 2).reshape(n, 2), np.zeros((n, 2), np.float32),
                            np.zeros(n, np.float32))

    train, valid, alpha = split(0, 8), split(100, 8), split(200, 8)
    source = InMemorySource(train, valid, 4, 0, 1, alpha=alpha)
    assert {int(i) for b in _take(source.valid_stream(), 2) for i in b.ids.flatten()} == set(range(200, 216))
    assert {int(i) for b in source.eval_batches() for i in b.ids.flatten()} == set(range(100, 116))
