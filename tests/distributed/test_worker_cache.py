"""Worker-side replay of splits that fit in memory: the first streamed pass is kept (train rows in tensors
allocated once), later passes come from memory without touching Ray Data, train rows reshuffled per epoch, and
every row is seen exactly once per epoch either way. All ranks must agree before replaying."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from autosrh_ray.distributed.cache import Budget, FirstPass, KeptBatches, RowCache
from autosrh_ray.distributed.sources import TRAIN, VALID_EVAL, RayDataSource, steps_per_epoch, train_datasets
from autosrh_ray.engine.batch import Batch

from .helpers import prepared_small


def _rows(batches) -> np.ndarray:
    """A pass as one matrix of rows (ids, values, label), in the order seen."""
    return np.concatenate([np.column_stack([b.ids.double().numpy(), b.values.double().numpy(),
                                            b.labels.double().numpy()]) for b in batches])


def _sorted(m: np.ndarray) -> np.ndarray:
    return m[np.lexsort(m.T[::-1])]


def test_row_cache_fills_in_place_and_replays_a_permutation_per_epoch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (40, 3)).astype(np.int32)
    values, labels = rng.random((40, 3)).astype(np.float32), rng.random(40).astype(np.float32)
    ids.setflags(write=False)  # as from Arrow memory
    cache = RowCache(40, 3)
    views = [cache.add(ids[s:s + 10], values[s:s + 10], labels[s:s + 10]) for s in range(0, 40, 10)]
    assert cache.complete and cache.ids.dtype == torch.int64
    assert views[1].ids.data_ptr() == cache.ids[10:].data_ptr()  # the batches trained on are the cache
    assert np.array_equal(_rows(views), np.column_stack([ids, values, labels]).astype(np.float64))
    one, two = (_rows(cache.shuffled(8, np.random.default_rng(e))) for e in (1, 2))
    assert one.shape == (40, 7) and np.array_equal(_sorted(one), _sorted(_rows(views)))
    assert not np.array_equal(one, two) and np.array_equal(_sorted(one), _sorted(two))
    assert len(list(cache.shuffled(16, np.random.default_rng(0)))) == 2  # remainder dropped, as when streaming
    assert cache.add(ids[:1], values[:1], labels[:1]) is None and not cache.complete  # more rows than planned


def test_kept_batches_give_the_budget_back_when_one_does_not_fit():
    batch = Batch.from_numpy(np.zeros((10, 2), np.int64), np.zeros((10, 2), np.float32), np.zeros(10, np.float32))
    size = KeptBatches.nbytes(10, 2)  # 10 * (2 * 4 + 2 * 4 + 4) = 200: int32 ids
    budget = Budget(2 * size + 1)
    kept = KeptBatches(budget)
    kept.keep(batch), kept.keep(batch)
    assert len(kept.batches) == 2 and budget.bytes_left == 1
    kept.keep(batch)
    assert kept.batches is None and budget.bytes_left == 2 * size + 1
    kept.keep(batch)
    assert kept.batches is None and budget.bytes_left == 2 * size + 1


def test_first_pass_asks_every_rank_once():
    calls = []

    def agree(ok):
        calls.append(ok)
        return False  # another rank could not keep its share

    released = []
    first = FirstPass()
    assert not first.replaying(agree, lambda: released.append(1)) and calls == []  # nothing streamed yet
    first.started, first.whole = True, True
    assert not first.replaying(agree, lambda: released.append(1))
    assert not first.replaying(agree, lambda: released.append(1))
    assert calls == [True] and released == [1]  # the kept copy is freed once, when the ranks decline it


@pytest.fixture(scope="module")
def small(ray_cluster, tmp_path_factory):
    config, prepared = prepared_small(tmp_path_factory.mktemp("cache"))
    return config, prepared


def _assert_one_epoch(prepared, rows: np.ndarray) -> None:
    """``rows`` are distinct train rows, as many as full batches hold (the shuffled remainder is dropped)."""
    train = prepared.load_split("train")
    every = set(map(tuple, np.column_stack([train.ids, train.values, train.labels]).astype(np.float64)))
    seen = set(map(tuple, rows))
    assert len(rows) == len(seen) == steps_per_epoch(prepared.rows.train, 128, 1) * 128 and seen <= every


def _source(prepared, budget_bytes, agree=None):
    datasets = train_datasets(prepared, shuffle_window=512, seed=0)
    opened = Counter()

    def shard(name):
        opened[name] += 1
        return datasets[name].iterator()

    b = 128
    kwargs = {"agree": agree} if agree else {}
    source = RayDataSource(b, 0, 0, prepared.features.num_fields, steps_per_epoch(prepared.rows.train, b, 1) * b,
                           Budget(budget_bytes), shard=shard, **kwargs)
    return source, opened


def test_splits_that_fit_are_replayed_from_memory(small):
    _, prepared = small
    source, opened = _source(prepared, 1 << 30)
    epochs = [_rows(source.train_epoch(e)) for e in range(3)]
    assert opened[TRAIN] == 1  # epochs 1 and 2 never touched Ray Data
    _assert_one_epoch(prepared, epochs[0])
    for rows in epochs[1:]:  # replays: the kept rows, in a new order each epoch
        assert np.array_equal(_sorted(rows), _sorted(epochs[0]))
    assert not np.array_equal(epochs[1], epochs[2])
    evals = [_rows(source.eval_batches()) for _ in range(2)]
    assert opened[VALID_EVAL] == 1 and np.array_equal(evals[0], evals[1])
    valid = prepared.load_split("valid")
    assert np.array_equal(_sorted(evals[0]), _sorted(np.column_stack([valid.ids, valid.values, valid.labels])
                                                     .astype(np.float64)))


@pytest.mark.parametrize("budget, agree", [(0, None), (1 << 30, lambda ok: False)])
def test_over_budget_or_without_agreement_every_epoch_streams(small, budget, agree):
    _, prepared = small
    source, opened = _source(prepared, budget, agree)
    epochs = [_rows(source.train_epoch(e)) for e in range(3)]
    evals = [_rows(source.eval_batches()) for _ in range(2)]
    assert opened[TRAIN] == 3 and opened[VALID_EVAL] == 2
    assert source.budget.bytes_left == budget  # copies nobody replays are freed and their bytes given back
    for rows in epochs:
        _assert_one_epoch(prepared, rows)
    assert np.array_equal(_sorted(evals[0]), _sorted(evals[1]))


def test_kept_batches_hold_int32_ids_and_replay_the_int64_batches_they_kept():
    g = np.random.default_rng(0)
    batches = [Batch.from_numpy(g.integers(0, 2**31 - 1, (10, 3)), g.random((10, 3), np.float32),
                                g.random(10, np.float32)) for _ in range(3)]
    budget = Budget(10**6)
    kept = KeptBatches(budget)
    for b in batches:
        kept.keep(b)
    assert all(kept.stored(i).ids.dtype == torch.int32 for i in range(3))
    assert 10**6 - budget.bytes_left == 3 * KeptBatches.nbytes(10, 3) == 3 * 10 * (3 * 4 + 3 * 4 + 4)
    for order in (None, [2, 0, 1]):
        replayed = list(kept.replay(order))
        expected = batches if order is None else [batches[i] for i in order]
        for got, want in zip(replayed, expected):
            assert got.ids.dtype == torch.int64 and torch.equal(got.ids, want.ids)
            assert torch.equal(got.values, want.values) and torch.equal(got.labels, want.labels)
    wide = Batch.from_numpy(np.array([[2**31, 0]]), np.zeros((1, 2), np.float32), np.zeros(1, np.float32))
    kept.keep(wide)  # an id past int32 keeps its int64 batch
    assert kept.stored(3).ids.dtype == torch.int64 and torch.equal(list(kept.replay([3]))[0].ids, wide.ids)


def test_alphas_validation_stream_leaves_out_the_rows_a_precision_is_chosen_on(small):
    """``held_from_alpha``: α's stream (``valid``) is the validation split without that hashed slice; evaluation
    (``valid_eval``) still reads every row."""
    from autosrh_ray.data.split import in_alpha_slice
    from autosrh_ray.data.streaming import IDS
    from autosrh_ray.distributed.sources import VALID

    _, prepared = small
    datasets = train_datasets(prepared, "validation", shuffle_window=512, seed=0, held_from_alpha=(0.25, 3))
    ids = {name: np.concatenate([b[IDS] for b in datasets[name].iter_batches(batch_format="numpy")])
           for name in (VALID, VALID_EVAL)}
    valid = prepared.load_split("valid").ids
    held = in_alpha_slice(valid, 0.25, 3)
    assert held.any() and (~held).any()
    assert np.array_equal(_sorted(ids[VALID].astype(np.int64)), _sorted(valid[~held]))
    assert np.array_equal(_sorted(ids[VALID_EVAL].astype(np.int64)), _sorted(valid))
