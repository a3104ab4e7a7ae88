"""Per-worker data for the Train loops: a Ray Data source and an ordered in-memory source, interchangeable.

A source gives one worker (rank r of W):

* ``train_epoch(epoch)``: this rank's local train batches (``global_batch / W`` rows each) of one epoch;
* ``valid_stream()``: an endless stream of local validation batches for α (restarted when it ends);
* ``eval_batches()``: this rank's part of the *whole* validation split — every row on exactly one rank — for
  metrics over the whole split (predictions are gathered, never averaged across ranks).

Ray Data (:class:`RayDataSource`): ``train`` and ``valid`` are split across workers with
``streaming_split(equal=True)`` (equal rows per rank, so with ``drop_last`` every rank gets exactly the same
number of batches and restarts its validation stream at the same step); ``valid_eval`` is split with
``equal=False`` so no row is dropped (:class:`LoopDataConfig`). Rows arrive assembled and (train, valid)
shuffled by Ray Data's tasks (:func:`train_datasets`): the worker only slices them into batches.

A split smaller than one batch is not an error: when a rank's share of a split holds no full local batch, the
whole share is one (smaller) batch — shares are equal, so every rank makes the same steps in lockstep (Ray Data:
the rows known to fall short are streamed whole from the start, otherwise a first pass without a full batch is
followed at once by one that keeps the short batch; in memory: one batch of the largest multiple of W rows).

In memory (:class:`InMemorySource`, tests and the equivalence check): global batch g holds rows
``order[g·B:(g+1)·B]`` and rank r takes rows ``r::W`` of it; evaluation rows are ``r::W`` of the split.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from queue import Queue
from typing import Any, Callable, Iterator, Optional, Protocol

import numpy as np

from ..data.prepared import EncodedSplit, PreparedData
from ..data.streaming import IDS, LABEL, VALUES, AlphaSlice, assembled_rows, split_datasets
from ..engine.batch import Batch
from ..engine.training import cycle
from .cache import Budget, FirstPass, KeptBatches, RowCache

TRAIN, VALID, VALID_EVAL = "train", "valid", "valid_eval"
EVAL_BATCH = 8192


class ShardSource(Protocol):
    def train_epoch(self, epoch: int) -> Iterator[Batch]: ...

    def valid_stream(self) -> Iterator[Batch]: ...

    def eval_batches(self) -> Iterator[Batch]: ...


def in_background(batches: Iterator[Batch], depth: int = 4) -> Iterator[Batch]:
    """Produce ``batches`` in a thread, ``depth`` ahead: Arrow → numpy → tensor conversion overlaps the
    training step (torch releases the GIL). Exceptions are re-raised in the consumer."""
    queue: Queue = Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for b in batches:
                queue.put(b)
            queue.put(done)
        except BaseException as err:  # handed to the consumer
            queue.put(err)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = queue.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


_NO_LOCAL_BATCH = "the validation split has no full local batch on this worker; lower train.batch_size"


@dataclass
class InMemorySource:
    """An ordered, deterministic loader over in-memory splits (shuffled per epoch with ``seed`` if ``shuffle``);
    α's stream comes from ``alpha`` when given (a slice of train or of validation), else from ``valid``."""

    train: EncodedSplit
    valid: EncodedSplit
    global_batch: int
    rank: int
    world: int
    seed: int = 0
    shuffle: bool = False
    alpha: Optional[EncodedSplit] = None

    def _batches(self, split: EncodedSplit, epoch: int, salt: int) -> Iterator[Batch]:
        n = len(split)
        b = min(self.global_batch, n - n % self.world) or self.global_batch  # a split smaller than one batch
        order = (np.random.default_rng([self.seed, salt, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        for start in range(0, n - n % b, b):
            idx = order[start:start + b][self.rank::self.world]
            yield Batch.from_numpy(split.ids[idx], split.values[idx], split.labels[idx])

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        return self._batches(self.train, epoch, 1)

    def valid_stream(self) -> Iterator[Batch]:
        rows = self.valid if self.alpha is None else self.alpha
        return cycle(lambda epoch: self._batches(rows, epoch, 2), _NO_LOCAL_BATCH)

    def eval_batches(self) -> Iterator[Batch]:
        idx = np.arange(self.rank, len(self.valid), self.world)
        for start in range(0, len(idx), EVAL_BATCH):
            i = idx[start:start + EVAL_BATCH]
            yield Batch.from_numpy(self.valid.ids[i], self.valid.values[i], self.valid.labels[i])


def _agree_alone(ok: bool) -> bool:
    return ok


def _train_shard(name: str):
    import ray.train

    return ray.train.get_dataset_shard(name)


@dataclass
class RayDataSource:
    """The worker's ``get_dataset_shard`` iterators over assembled rows (:func:`train_datasets`).

    Splits whose share fits in ``budget`` are streamed once and replayed from memory afterwards
    (:mod:`.cache`): train rows reshuffled per epoch (seeded by ``seed``, epoch and rank), validation rows in
    order. ``train_rows`` is the number of full-batch rows this rank streams per epoch (0: do not keep train);
    ``agree`` combines a per-rank flag across ranks (MIN all-reduce) so all ranks replay or all stream;
    ``shard`` gives the named split's iterator (Ray Train's ``get_dataset_shard``; a plain iterator in tests);
    ``whole``: the splits known (from their row counts) to give this rank less than one full local batch, used
    as one batch of the whole share; a split found so on its first pass joins them; ``valid_share``: this rank's
    rows of the validation split when α's stream is that split and the equal split drops none of it (0
    otherwise), so evaluation may replay α's kept pass."""

    local_batch: int
    rank: int = 0
    seed: int = 0
    num_fields: int = 0
    train_rows: int = 0
    budget: Budget = field(default_factory=lambda: Budget(0))
    agree: Callable[[bool], bool] = _agree_alone
    shard: Callable[[str], Any] = _train_shard
    whole: set = field(default_factory=set)
    valid_share: int = 0
    _train: FirstPass = field(default_factory=FirstPass)
    _train_rows: Optional[RowCache] = None
    _eval: FirstPass = field(default_factory=FirstPass)
    _eval_kept: Optional[KeptBatches] = None
    _valid_kept: Optional[KeptBatches] = None
    _valid_rows: Optional[int] = None  # rows α's first pass kept (None: not finished, or over the budget)

    def _iter(self, name: str, batch_size: int, drop_last: bool) -> Iterator[Batch]:
        for cols in self._columns(name, batch_size, drop_last):
            yield Batch.from_numpy(cols[IDS], cols[VALUES], cols[LABEL])

    def _columns(self, name: str, batch_size: int, drop_last: bool) -> Iterator[dict]:
        return self.shard(name).iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last,
                                             prefetch_batches=2)

    def _pass_columns(self, name: str) -> Iterator[dict]:
        """One pass over a training stream (``train`` or ``valid``): full local batches, or — for a share
        smaller than one batch — the whole share as one. A pass that finds no full batch is followed at once by
        a pass that keeps the short one (every rank's share is equal: all ranks do the same)."""
        short = name in self.whole
        seen = False
        for cols in self._columns(name, self.local_batch, not short):
            seen = True
            yield cols
        if not seen and not short:
            self.whole.add(name)
            yield from self._columns(name, self.local_batch, False)

    def _pass(self, name: str) -> Iterator[Batch]:
        for cols in self._pass_columns(name):
            yield Batch.from_numpy(cols[IDS], cols[VALUES], cols[LABEL])

    def train_epoch(self, epoch: int) -> Iterator[Batch]:
        if self._train.replaying(self.agree, self._release_train_rows):
            rng = np.random.default_rng([self.seed, 1, epoch, self.rank])
            rows = self._train_rows
            # the gather beside the step; a share smaller than one batch is one batch
            return in_background(rows.shuffled(min(self.local_batch, rows.filled), rng))
        if self._train.started:
            return in_background(self._pass(TRAIN))
        self._train.started = True
        if self.train_rows and self.budget.take(RowCache.nbytes(self.train_rows, self.num_fields)):
            self._train_rows = RowCache(self.train_rows, self.num_fields)
        return in_background(self._train_first_pass())

    def _release_train_rows(self) -> None:
        if self._train_rows is not None:
            self.budget.give(self._train_rows.size)
            self._train_rows = None

    def _train_first_pass(self) -> Iterator[Batch]:
        rows = self._train_rows
        for cols in self._pass_columns(TRAIN):
            kept = rows.add(cols[IDS], cols[VALUES], cols[LABEL]) if rows is not None else None
            yield kept if kept is not None else Batch.from_numpy(cols[IDS], cols[VALUES], cols[LABEL])
        self._train.whole = rows is not None and rows.complete

    def valid_stream(self) -> Iterator[Batch]:
        """Streams the first pass and keeps its batches (within the budget); later passes replay them
        in a new seeded order. Restarting a streaming split costs seconds, and the search needs a validation
        batch every step (~8 passes per epoch at an 8:1:1 split); beyond the budget it restarts instead (equal
        splits give every rank the same rows, so all ranks take the same branch at the same step).

        α trains on full local batches only (a remainder is dropped, as ``drop_last`` would), but the first pass
        reads the remainder too and keeps it: the kept pass is then this rank's whole share, which evaluation
        replays instead of keeping a second copy (:meth:`eval_batches`). A share with no full batch is one batch."""
        kept = self._valid_kept = KeptBatches(self.budget)
        short, trained, remainder = VALID in self.whole, False, None
        for cols in self._columns(VALID, self.local_batch, False):
            b = Batch.from_numpy(cols[IDS], cols[VALUES], cols[LABEL])
            kept.keep(b)
            if short or len(b) == self.local_batch:
                trained = True
                yield b
            else:
                remainder = b
        self._valid_rows = sum(b.rows for b in kept.batches) if kept.batches is not None else None
        if not trained:  # the share holds no full batch (equal on every rank): the whole share is one batch
            if remainder is None:
                raise ValueError(_NO_LOCAL_BATCH)
            self.whole.add(VALID)
            short = True
            yield remainder
        if kept.batches is None:
            yield from cycle(lambda e: self._pass(VALID), _NO_LOCAL_BATCH)
            return
        full = [i for i, b in enumerate(kept.batches) if short or b.rows == self.local_batch]
        for epoch in itertools.count(1):
            order = np.random.default_rng([self.seed, 2, epoch]).permutation(len(full))
            yield from kept.replay(full[i] for i in order)

    def eval_batches(self) -> Iterator[Batch]:
        """This rank's part of the whole validation split: the first pass streamed and kept (within the
        budget), later passes replayed. When α's stream is the validation split and its kept first pass is this
        rank's exact share of it on every rank (``valid_share``: no row dropped by the equal split), that copy
        is replayed from the start instead — one copy of the validation split in the worker, not two."""
        if not self._eval.started and self.valid_share:
            whole = self._valid_rows == self.valid_share and self._valid_kept.batches is not None
            if self.agree(whole):
                self._eval = FirstPass(started=True, whole=True, replay=True)
                self._eval_kept = self._valid_kept
        if self._eval.replaying(self.agree, lambda: self._eval_kept.release()):
            return self._eval_kept.replay()
        if self._eval.started:
            return self._iter(VALID_EVAL, EVAL_BATCH, False)
        self._eval.started = True
        return self._eval_first_pass()

    def _eval_first_pass(self) -> Iterator[Batch]:
        kept = self._eval_kept = KeptBatches(self.budget)
        for b in self._iter(VALID_EVAL, EVAL_BATCH, False):
            kept.keep(b)
            yield b
        self._eval.whole = kept.batches is not None


def train_datasets(prepared: PreparedData, alpha_rows: Optional[str] = None, shuffle_window: int = 0, seed: int = 0,
                   alpha_slice: tuple[float, int] = (0.1, 0), task_cpus: float = 1.0,
                   held_from_alpha: Optional[tuple[float, int]] = None) -> dict:
    """The datasets a Train run needs: ``train``, ``valid_eval`` and, for the search, ``valid`` — the stream
    that fits α: the validation split (``alpha_rows="validation"``) or the ``alpha_slice`` (fraction, seed) of
    train (``"train"``; Θ's ``train`` stream then holds the other rows). Rows are assembled in Ray Data's tasks
    (``task_cpus`` CPUs each). With ``shuffle_window`` > 0 the train files are read in a new order each epoch
    (seeded by ``seed``) and ``train``/``valid`` rows are permuted within windows of that many rows;
    ``valid_eval`` keeps its order. ``held_from_alpha`` (fraction, seed): the validation rows of that hashed
    slice are left out of α's stream (a byte budget's model is chosen on them)."""
    ds = split_datasets(prepared, seed if shuffle_window else None, task_cpus)  # lazy, over the Parquet shards
    f = prepared.features

    def rows(split: str, window: int = 0, side: Optional[AlphaSlice] = None):
        return assembled_rows(ds[split], f, window, side, task_cpus, seed)

    out = {TRAIN: rows("train", shuffle_window), VALID_EVAL: rows("valid")}
    if alpha_rows == "validation":
        held = AlphaSlice(*held_from_alpha, inside=False) if held_from_alpha else None
        out[VALID] = rows("valid", shuffle_window, held)
    elif alpha_rows == "train":
        out[TRAIN] = rows("train", shuffle_window, AlphaSlice(*alpha_slice, inside=False))
        out[VALID] = rows("train", shuffle_window, AlphaSlice(*alpha_slice, inside=True))
    return out


def steps_per_epoch(rows: int, global_batch: int, world: int) -> int:
    """Full local batches per rank after ``streaming_split(equal=True)``: ⌊⌊rows/W⌋ / (B/W)⌋ = ⌊rows/B⌋."""
    return (rows // world) // (global_batch // world)


def rows_per_pass(rows: int, global_batch: int, world: int) -> int:
    """Rows one rank trains on per pass over a split of ``rows`` rows: its full local batches, or its whole
    share when that holds no full batch (see the module docstring)."""
    share, local = rows // world, global_batch // world
    return share if share < local else steps_per_epoch(rows, global_batch, world) * local


def loop_data_config(execution_options, local: bool = False):
    """A :class:`ray.train.DataConfig` splitting ``train``/``valid`` equally and ``valid_eval`` without drops;
    ``local``: a single worker iterates every dataset itself (see :class:`LoopDataConfig`)."""
    from ray.train import DataConfig

    class LoopDataConfig(DataConfig):
        """``streaming_split(equal=False)`` for ``valid_eval`` so every validation row is evaluated once.

        With ``local`` and one worker, the worker gets plain iterators: the same rows in the same order, executed
        in the worker itself, without a split-coordinator actor per dataset (a process start each, seconds on a
        small machine). Meant for splits the worker keeps after their first pass: a stream executed in the
        worker every epoch shares the training loop's GIL (measured: 6% of the steady-state rate on 2 CPUs)."""

        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            if world_size == 1 and local:
                whole = {}
                for name, ds in datasets.items():
                    ds = ds.copy(ds)
                    ds.context.execution_options = self._resolve_execution_options(name)
                    whole[name] = ds.iterator()
                return [whole]
            equal = {k: v for k, v in datasets.items() if k != VALID_EVAL}
            output = super().configure(equal, world_size, worker_handles, worker_node_ids, **kwargs)
            if VALID_EVAL in datasets:
                ds = datasets[VALID_EVAL]
                ds = ds.copy(ds)
                ds.context.execution_options = self._resolve_execution_options(VALID_EVAL)
                for i, split in enumerate(ds.streaming_split(world_size, equal=False)):
                    output[i][VALID_EVAL] = split
            return output

    return LoopDataConfig(execution_options=execution_options)
