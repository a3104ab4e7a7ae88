"""TorchDistributedSync on a real 2-process gloo group (torch.multiprocessing; no Ray, a few seconds)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autosrh_ray.distributed.sync import TorchDistributedSync, all_min, gather_objects


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


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for via_dense in (False, True):
            sync = TorchDistributedSync(sparse_via_dense=via_dense)
            dense, sparse = sync.theta(_grads(rank))
            results[via_dense] = (dense, sparse.to_dense(), sorted(sparse.coalesce()._indices()[0].tolist()))
        alpha = TorchDistributedSync().alpha(torch.full((2, 3), float(rank + 1)))
        steps = all_min(5 + rank)
        gathered = gather_objects(rank * 10)
        torch.save({"results": results, "alpha": alpha, "steps": steps, "gathered": gathered},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_dense_and_sparse_theta_grads_are_averaged(synced):
    g0, g1 = _grads(0), _grads(1)
    expected_dense = (g0[0] + g1[0]) / 2
    expected_sparse = (g0[1].to_dense() + g1[1].to_dense()) / 2
    for via_dense in (False, True):
        for rank in range(2):
            dense, sparse, rows = synced[rank]["results"][via_dense]
            torch.testing.assert_close(dense, expected_dense, rtol=1e-15, atol=0)
            torch.testing.assert_close(sparse, expected_sparse, rtol=1e-15, atol=1e-17)
            assert rows == [0, 2, 5]  # the union of touched rows, coalesced


def test_every_rank_gets_bitwise_identical_results(synced):
    for via_dense in (False, True):
        a, b = synced[0]["results"][via_dense], synced[1]["results"][via_dense]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(synced[0]["alpha"], synced[1]["alpha"])
    assert torch.equal(synced[0]["alpha"], torch.full((2, 3), 1.5))


def test_helpers(synced):
    assert synced[0]["steps"] == synced[1]["steps"] == 5
    assert synced[0]["gathered"] == [0, 10] and synced[1]["gathered"] is None
