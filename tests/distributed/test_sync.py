"""TorchDistributedSync on real 2- and 3-process gloo groups (torch.multiprocessing; no Ray, a few seconds each).

Sparse gradients go through the row-sparse exchange (all-gathers of padded, equal-size tensors: the code path
NCCL runs too); every case is compared with the dense all-reduce of the densified gradients, averaged. At world
size 3 the reference is computed here, in float64, from the ranks' gradients (the sum of their dense forms over
3), for rows of K values, of K1×K2 values and of single values, and for gradients with two sparse dimensions
(ids are (row, column) pairs: the exchange's multi-dimensional union).
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import autosrh_ray.distributed.sync as sync_module
from autosrh_ray.distributed.sync import TorchDistributedSync, all_min, gather_objects

K = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grads(rank: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    dense = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    rows = torch.tensor([[0, 2, 2]]) if rank == 0 else torch.tensor([[2, 5]])  # row 2 on both, repeated on rank 0
    vals = torch.randn(rows.shape[1], 4, generator=gen, dtype=torch.float64)
    return [dense, torch.sparse_coo_tensor(rows, vals, (7, 4))]


# Each case: (M, rank 0's touched rows, rank 1's touched rows), uncoalesced (repeats are summed by coalesce).
CASES = {
    "both_ranks_and_repeats": (7, [0, 2, 2], [2, 5]),
    "rank1_touched_nothing": (9, [1, 3, 3, 8], []),
    "rank0_touched_nothing": (9, [], [4, 0, 4]),
    "counts_differ": (9, [4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 5]),
    "nobody_touched": (5, [], []),
    "cancelling_row": (6, [3, 1], [3]),  # row 3's contributions cancel: still in the union, value 0
}


def _case_grad(name: str, rank: int) -> torch.Tensor:
    m, *rows = CASES[name]
    ids = torch.tensor(rows[rank], dtype=torch.int64).reshape(1, -1)
    gen = torch.Generator().manual_seed(1000 * rank + len(name))
    vals = torch.randn(ids.shape[1], K, generator=gen, dtype=torch.float64)
    if name == "cancelling_row":
        vals[0] = torch.arange(1.0, K + 1, dtype=torch.float64) * (1 if rank == 0 else -1)
    return torch.sparse_coo_tensor(ids, vals, (m, K))


def _random_grad(rank: int, m: int = 1000, n: int = 600, k: int = 8) -> torch.Tensor:
    """Heavy-tailed ids (many repeats, many shared rows), different counts per rank."""
    gen = torch.Generator().manual_seed(7 + rank)
    ids = (torch.rand(n - 100 * rank, generator=gen, dtype=torch.float64) ** 4 * m).long().reshape(1, -1)
    return torch.sparse_coo_tensor(ids, torch.randn(ids.shape[1], k, generator=gen, dtype=torch.float64), (m, k))


def _adam_grads(step: int, rank: int) -> torch.Tensor:
    """Two steps of an M = 12 table: overlap, repeats, a cancelling row (3 on step 0), rank 1 idle on step 1."""
    rows = {(0, 0): [0, 3, 3, 7], (0, 1): [7, 3, 10], (1, 0): [1, 7, 11, 11], (1, 1): []}[step, rank]
    ids = torch.tensor(rows, dtype=torch.int64).reshape(1, -1)
    gen = torch.Generator().manual_seed(50 + 10 * step + rank)
    vals = torch.randn(ids.shape[1], 3, generator=gen, dtype=torch.float64)
    if step == 0:  # row 3: rank 0 sends a + a (repeated), rank 1 sends -2a
        a = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64)
        vals[1] = vals[2] = a if rank == 0 else vals[1]
        if rank == 1:
            vals[1] = -2 * a
    return torch.sparse_coo_tensor(ids, vals, (12, 3))


class _Recorder:
    """Stands in for ``torch.distributed`` inside the sync module: records each collective's tensors."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        fn = getattr(dist, name)
        if name in ("all_gather", "all_reduce", "broadcast", "reduce_scatter", "all_to_all") or "object" in name:
            def wrapped(*args, **kwargs):
                if name == "all_gather":
                    self.calls.append((name, tuple(args[1].shape), [tuple(t.shape) for t in args[0]]))
                elif "object" in name:
                    self.calls.append((name,))
                else:
                    self.calls.append((name, tuple(args[0].shape)))
                return fn(*args, **kwargs)
            return wrapped
        return fn


def _dense_then_sparse_over_union(sync: TorchDistributedSync, grad: torch.Tensor) -> torch.Tensor:
    """The reference: dense all-reduce of the densified gradient, made sparse over the rows any rank touched."""
    dense = sync._dense(grad.to_dense())
    touched = torch.zeros(grad.shape[0], dtype=dense.dtype)
    touched[grad.coalesce()._indices()[0]] = 1
    dist.all_reduce(touched)
    rows = torch.nonzero(touched).flatten()
    return torch.sparse_coo_tensor(rows.unsqueeze(0), dense[rows], grad.shape).coalesce()


def _sparse_adam(sync: TorchDistributedSync, reduce) -> dict:
    weight = torch.nn.Parameter(torch.randn(12, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    opt = torch.optim.SparseAdam([weight], lr=0.1)
    grads = []
    for step in range(2):
        weight.grad = reduce(sync, _adam_grads(step, sync.rank))
        grads.append(sorted(weight.grad.coalesce()._indices()[0].tolist()))
        opt.step()
    state = opt.state[weight]
    return {"weight": weight.detach().clone(), "exp_avg": state["exp_avg"].clone(),
            "exp_avg_sq": state["exp_avg_sq"].clone(), "grad_rows": grads}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        sync = TorchDistributedSync()
        dense, sparse = sync.theta(_grads(rank))
        recorder = _Recorder()
        sync_module.dist = recorder  # record the exchange's collectives (the module's ``dist`` only)
        try:
            cases = {}
            for name in [*CASES, "random"]:
                grad = _case_grad(name, rank) if name != "random" else _random_grad(rank)
                start = len(recorder.calls)
                out = sync.theta([grad])[0]
                calls = recorder.calls[start:]
                cases[name] = {"sparse": out, "calls": calls, "dense_allreduce": sync._dense(grad.to_dense())}
        finally:
            sync_module.dist = dist
        adam = {"exchange": _sparse_adam(sync, lambda s, g: s.theta([g])[0]),
                "dense": _sparse_adam(sync, _dense_then_sparse_over_union)}
        alpha = TorchDistributedSync().alpha(torch.full((2, 3), float(rank + 1)))
        steps = all_min(5 + rank)
        gathered = gather_objects(rank * 10)
        torch.save({"dense": dense, "sparse": sparse, "cases": cases, "adam": adam, "alpha": alpha,
                    "steps": steps, "gathered": gathered}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    for attempt in range(3):  # a rank that dies by a signal (gloo losing the race for its free port) is retried;
        try:                  # a Python exception in a rank (a failing check) is not
            mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException:
            if attempt == 2:
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _touched(grads: list[torch.Tensor]) -> list[int]:
    return sorted(set().union(*(g.coalesce()._indices()[0].tolist() for g in grads)))


def test_dense_and_sparse_theta_grads_are_averaged(synced):
    g0, g1 = _grads(0), _grads(1)
    for rank in range(2):
        torch.testing.assert_close(synced[rank]["dense"], (g0[0] + g1[0]) / 2, rtol=0, atol=1e-12)
        sparse = synced[rank]["sparse"]
        assert sparse.is_coalesced() and sparse._indices()[0].tolist() == [0, 2, 5]  # the union of touched rows
        torch.testing.assert_close(sparse.to_dense(), (g0[1].to_dense() + g1[1].to_dense()) / 2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", [*CASES, "random"])
def test_row_sparse_exchange_equals_the_dense_allreduce(synced, name):
    grads = [_case_grad(name, r) if name != "random" else _random_grad(r) for r in range(2)]
    expected = (grads[0].to_dense() + grads[1].to_dense()) / 2
    union = _touched(grads)
    for rank in range(2):
        case = synced[rank]["cases"][name]
        sparse = case["sparse"]
        assert sparse.is_sparse and sparse.is_coalesced() and sparse.shape == grads[0].shape
        assert sparse._indices()[0].tolist() == union  # every row any rank touched, each once, sorted
        torch.testing.assert_close(case["dense_allreduce"], expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(sparse.to_dense(), case["dense_allreduce"], rtol=0, atol=1e-12)
    a, b = synced[0]["cases"][name]["sparse"], synced[1]["cases"][name]["sparse"]
    assert torch.equal(a._indices(), b._indices()) and torch.equal(a._values(), b._values())  # bitwise, every rank


def test_cancelling_row_stays_in_the_union_with_value_zero(synced):
    sparse = synced[0]["cases"]["cancelling_row"]["sparse"]
    assert sparse._indices()[0].tolist() == [1, 3]
    assert torch.equal(sparse._values()[1], torch.zeros(K, dtype=torch.float64))


def test_exchange_sends_equal_size_tensors_proportional_to_touched_rows(synced):
    """NCCL's constraints on the gloo run: all-gathers of equal-size tensors only, no object collectives; the
    messages are padded to the largest count of unique rows, never M rows."""
    for name in [*CASES, "random"]:
        grads = [_case_grad(name, r) if name != "random" else _random_grad(r) for r in range(2)]
        most = max(g.coalesce()._indices().shape[1] for g in grads)
        for rank in range(2):
            calls = synced[rank]["cases"][name]["calls"]
            assert all(c[0] == "all_gather" for c in calls), calls
            for _, sent, received in calls:
                assert received == [sent, sent]
            assert calls[0][1] == (1,)  # the counts
            if most == 0:
                assert len(calls) == 1
            else:
                k = grads[0].shape[1]
                assert [c[1] for c in calls[1:]] == [(1, most), (most, k)]  # ids, rows
    assert max(g.coalesce()._indices().shape[1] for g in [_random_grad(0), _random_grad(1)]) < 1000 // 2


def test_sparse_adam_updates_the_same_rows_to_the_same_values(synced):
    for rank in range(2):
        ex, ref = synced[rank]["adam"]["exchange"], synced[rank]["adam"]["dense"]
        assert ex["grad_rows"] == ref["grad_rows"] == [[0, 3, 7, 10], [1, 7, 11]]
        initial = torch.randn(12, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        changed = lambda w: sorted(torch.nonzero((w != initial).any(dim=1)).flatten().tolist())  # noqa: E731
        assert changed(ex["weight"]) == changed(ref["weight"]) == [0, 1, 7, 10, 11]  # row 3's gradient is 0
        for key in ("weight", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ex[key], ref[key], rtol=0, atol=1e-12)
    for key in ("weight", "exp_avg", "exp_avg_sq"):
        assert torch.equal(synced[0]["adam"]["exchange"][key], synced[1]["adam"]["exchange"][key])


def test_every_rank_gets_bitwise_identical_results(synced):
    a, b = synced
    assert torch.equal(a["dense"], b["dense"]) and torch.equal(a["sparse"].to_dense(), b["sparse"].to_dense())
    assert torch.equal(a["alpha"], b["alpha"])
    assert torch.equal(a["alpha"], torch.full((2, 3), 1.5))


def test_helpers(synced):
    assert synced[0]["steps"] == synced[1]["steps"] == 5
    assert synced[0]["gathered"] == [0, 10] and synced[1]["gathered"] is None


# ------------------------------------------------------------------------------------------------ world size 3
WORLD3 = 3
# Each case: (shape, sparse dims, each rank's touched ids: one per entry, a tuple per entry with 2 sparse dims),
# uncoalesced (repeats are summed by coalesce).
CASES3 = {
    "overlap_repeats_idle_rank": ((10, K), 1, [[0, 2, 2, 9], [2, 5], []]),
    "counts_differ": ((9, K), 1, [[4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 5], [8, 8, 1]]),
    "only_the_last_rank": ((6, K), 1, [[], [], [5, 0, 5]]),
    "nobody_touched": ((5, K), 1, [[], [], []]),
    "rows_of_k1_by_k2": ((8, 3, 2), 1, [[1, 4, 4], [4, 7], [0, 4]]),
    "rows_of_one_value": ((7,), 1, [[6, 1], [1], [3, 3, 6]]),
    # (row, column) pairs sharing a row or a column across ranks, repeated within a rank, an idle rank
    "two_sparse_dims": ((5, 6, K), 2, [[(0, 1), (3, 2), (0, 1)], [(3, 2), (4, 5), (0, 2), (3, 1)], [(1, 1)]]),
    "two_sparse_dims_idle_rank": ((4, 3, K), 2, [[(2, 0), (0, 2)], [], [(0, 2), (2, 2), (2, 0)]]),
    "two_sparse_dims_no_dense": ((6, 6), 2, [[(5, 0), (0, 5)], [(0, 5), (5, 5)], [(0, 0), (0, 5), (0, 5)]]),
}


def _case3_grad(name: str, rank: int) -> torch.Tensor:
    shape, sparse_dims, touched = CASES3[name]
    ids = torch.tensor(touched[rank], dtype=torch.int64).reshape(-1, sparse_dims).T
    gen = torch.Generator().manual_seed(300 + 17 * rank + len(name))
    vals = torch.randn((ids.shape[1], *shape[sparse_dims:]), generator=gen, dtype=torch.float64)
    return torch.sparse_coo_tensor(ids, vals, shape)


def _random3_grad(rank: int, sparse_dims: int) -> torch.Tensor:
    """Heavy-tailed ids (many repeats, many shared), different counts per rank; 1 or 2 sparse dimensions."""
    gen = torch.Generator().manual_seed(70 + 3 * rank + sparse_dims)
    n = 500 - 150 * rank
    shape = (400, K) if sparse_dims == 1 else (40, 30, K)
    ids = torch.stack([(torch.rand(n, generator=gen, dtype=torch.float64) ** 3 * m).long()
                       for m in shape[:sparse_dims]])
    return torch.sparse_coo_tensor(ids, torch.randn(n, K, generator=gen, dtype=torch.float64), shape)


def _grad3(name: str, rank: int) -> torch.Tensor:
    return {"random": lambda: _random3_grad(rank, 1), "random_two_sparse_dims": lambda: _random3_grad(rank, 2)}.get(
        name, lambda: _case3_grad(name, rank))()


NAMES3 = [*CASES3, "random", "random_two_sparse_dims"]


def _dense3(rank: int) -> torch.Tensor:
    return torch.randn(3, 5, generator=torch.Generator().manual_seed(900 + rank), dtype=torch.float64)


def _worker3(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD3)
    try:
        sync = TorchDistributedSync()
        recorder = _Recorder()
        sync_module.dist = recorder
        try:
            cases = {}
            for name in NAMES3:
                start = len(recorder.calls)
                cases[name] = {"sparse": sync.theta([_grad3(name, rank)])[0], "calls": recorder.calls[start:]}
            dense = sync.theta([_dense3(rank)])[0]
            alpha = sync.alpha(torch.full((2, 3), float(rank + 1)))
        finally:
            sync_module.dist = dist
        torch.save({"cases": cases, "dense": dense, "alpha": alpha, "size": sync.size,
                    "steps": all_min(9 - rank)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced3(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync3")
    for attempt in range(3):  # as ``synced``: a rank killed by a signal is retried, a Python exception is not
        try:
            mp.spawn(_worker3, args=(_free_port(), str(out)), nprocs=WORLD3, join=True)
            break
        except mp.ProcessExitedException:
            if attempt == 2:
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD3)]


def _union3(grads: list[torch.Tensor]) -> list[tuple]:
    """The ids any rank touched, each once, in row-major order (Python sets and tuples)."""
    return sorted({tuple(col) for g in grads for col in g._indices().T.tolist()})


@pytest.mark.parametrize("name", NAMES3)
def test_world_of_three_exchange_equals_the_mean_of_the_dense_gradients(synced3, name):
    grads = [_grad3(name, r) for r in range(WORLD3)]
    expected = sum(g.to_dense() for g in grads) / WORLD3  # float64, summed here
    union = _union3(grads)
    for rank in range(WORLD3):
        out = synced3[rank]["cases"][name]["sparse"]
        assert synced3[rank]["size"] == WORLD3
        assert out.is_sparse and out.shape == grads[0].shape and out.sparse_dim() == grads[0].sparse_dim()
        assert [tuple(col) for col in out._indices().T.tolist()] == union  # sorted, unique: truly coalesced
        assert out.is_coalesced() and out._values().shape == (len(union), *grads[0].shape[out.sparse_dim():])
        torch.testing.assert_close(out.to_dense(), expected, rtol=0, atol=1e-12)
    first = synced3[0]["cases"][name]["sparse"]
    for other in synced3[1:]:  # bitwise the same on every rank
        assert torch.equal(first._indices(), other["cases"][name]["sparse"]._indices())
        assert torch.equal(first._values(), other["cases"][name]["sparse"]._values())


def test_world_of_three_sends_equal_size_tensors_padded_to_the_largest_count(synced3):
    for name in NAMES3:
        grads = [_grad3(name, r) for r in range(WORLD3)]
        most = max(g.coalesce()._nnz() for g in grads)
        for rank in range(WORLD3):
            calls = synced3[rank]["cases"][name]["calls"]
            assert all(c[0] == "all_gather" for c in calls), calls
            assert all(received == [sent] * WORLD3 for _, sent, received in calls)
            sparse_dims = grads[0].sparse_dim()
            expected = [(1,)] + ([] if most == 0 else [(sparse_dims, most), (most, *grads[0].shape[sparse_dims:])])
            assert [c[1] for c in calls] == expected, (name, rank)


def test_world_of_three_dense_and_alpha_are_averaged(synced3):
    expected = sum(_dense3(r) for r in range(WORLD3)) / WORLD3
    for rank in range(WORLD3):
        torch.testing.assert_close(synced3[rank]["dense"], expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(synced3[rank]["alpha"], torch.full((2, 3), 2.0), rtol=0, atol=1e-15)  # (1+2+3)/3
        assert synced3[rank]["steps"] == 7
