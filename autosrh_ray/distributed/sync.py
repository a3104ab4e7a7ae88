"""Gradient synchronisation over ``torch.distributed`` (explicit collectives, no DDP wrapper).

Why explicit collectives rather than DDP, for the search *and* for plain training (retrain, UE):

* the bi-level step needs several backwards per step (train loss, validation loss at the virtual Θ', the
  finite-difference or double-backward Hessian-vector product); DDP all-reduces on *every* backward and does not
  support double backward, while :class:`~autosrh_ray.engine.search.BiLevelSearch` asks for exactly the two reductions
  it needs through :class:`~autosrh_ray.engine.search.GradSync` (Θ's gradient and the direction v, and α's gradient);
* α takes part in both forwards but must be reduced only from the validation loss, before Eq. 14's row
  normalisation — outside any DDP wrapper anyway;
* one code path for search and retraining keeps Θ's update identical in both, and sparse embedding gradients
  (``train.embedding_optimizer: sparse_adam``) get a row-sparse exchange of their own (no DDP sparse caveats).
The cost is DDP's overlap of communication with the backward pass; for CTR models, whose step time is
dominated by the embedding lookup and the optimiser, that overlap is small (see ``benchmarks/ray_overhead.py``).

Dense gradients (dense Θ, α) are all-reduced and divided by the world size W.

Sparse gradients (COO, e.g. an ``nn.Embedding(sparse=True)`` gradient) are exchanged row-sparse, the same way
with gloo and NCCL, so communication is proportional to the rows a batch touched, never to the table's M rows:
each rank coalesces its gradient to (unique row ids, rows); the counts are all-gathered; ids and rows are padded
to the largest count (the counts mark which entries are real) and all-gathered as equal-size device tensors
(what NCCL requires; no ``all_gather_object``); every rank then sums the W contributions into their union of
rows with one ``index_add_`` per rank, in rank order (ids are unique within a rank, so no two additions of one
call meet in a row: the sum is deterministic on CPU and GPU and bitwise identical on every rank), and divides
by W. Per step and rank a ring all-gather sends (W−1)·(8 + max_count·(8 + row bytes)) bytes, against
2·(W−1)/W·M·K·4 for a dense all-reduce of a float32 M×K gradient (``benchmarks/sync_bytes.py``). The result
equals the dense all-reduce of the densified gradients (checked to 1e-12 in float64, and so are SparseAdam's
updates, in ``tests/distributed/test_sync.py``), and it is a sparse gradient over exactly the rows that *any*
rank touched, so SparseAdam updates the same rows on every rank.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

from ..engine.search import GradSync


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TorchDistributedSync(GradSync):
    """Averages Θ's gradients (dense: all-reduce; sparse COO: row-sparse exchange) and α's gradient across the
    process group. Works with gloo and NCCL alike (tensors stay on the gradient's device)."""

    def __init__(self):
        self.rank, self.size = world()

    def _dense(self, grad: torch.Tensor) -> torch.Tensor:
        out = grad.detach().clone()
        dist.all_reduce(out)
        return out.div_(self.size)

    def _sparse(self, grad: torch.Tensor) -> torch.Tensor:
        """The mean of every rank's sparse gradient, as a coalesced sparse tensor over the union of their rows."""
        grad = grad.detach().coalesce()
        ids, rows = grad._indices(), grad._values()  # (S, n) int64, (n, *dense dims)
        n, size = ids.shape[1], self.size
        count = torch.tensor([n], dtype=torch.int64, device=ids.device)
        counts = [torch.empty_like(count) for _ in range(size)]
        dist.all_gather(counts, count)
        counts = torch.cat(counts).tolist()  # one host sync: the padded size must be known to allocate
        pad = max(counts)
        if pad == 0:  # no rank touched a row
            return grad.clone()
        if n < pad:  # equal sizes for the all-gathers; entries past a rank's count are ignored
            ids = torch.cat([ids, ids.new_zeros((ids.shape[0], pad - n))], dim=1)
            rows = torch.cat([rows, rows.new_zeros((pad - n, *rows.shape[1:]))])
        all_ids = ids.new_empty((size, *ids.shape))
        all_rows = rows.new_empty((size, *rows.shape))
        dist.all_gather(list(all_ids.unbind(0)), ids.contiguous())
        dist.all_gather(list(all_rows.unbind(0)), rows.contiguous())
        real = torch.cat([all_ids[r, :, :c] for r, c in enumerate(counts)], dim=1)
        if real.shape[0] == 1:
            union, inverse = torch.unique(real[0], sorted=True, return_inverse=True)
            union = union.unsqueeze(0)
        else:
            union, inverse = torch.unique(real, sorted=True, return_inverse=True, dim=1)
        out = rows.new_zeros((union.shape[1], *rows.shape[1:]))
        start = 0
        for r, c in enumerate(counts):  # rank order; a rank's ids are unique, so each call adds once per row
            out.index_add_(0, inverse[start:start + c], all_rows[r, :c])
            start += c
        out.div_(size)
        return torch.sparse_coo_tensor(union, out, grad.shape, is_coalesced=True, check_invariants=False)

    def theta(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.size == 1:
            return grads
        return [self._sparse(g) if g.is_sparse else self._dense(g) for g in grads]

    def alpha(self, grad: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return grad
        return self._dense(grad)


def all_min(value: int, device: torch.device | str = "cpu") -> int:
    """The minimum of an integer over all ranks (used to keep every rank at the same number of steps)."""
    _, size = world()
    if size == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather_objects(obj: Any) -> Optional[list]:
    """Every rank's ``obj`` on rank 0 (rank order); None on the other ranks."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` on every rank (rank order)."""
    _, size = world()
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    _, size = world()
    if size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
