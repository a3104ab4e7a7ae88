"""Gradient synchronisation over ``torch.distributed`` (explicit all-reduce, no DDP wrapper).

Why explicit all-reduce rather than DDP, for the search *and* for plain training (retrain, UE):

* the bi-level step needs several backwards per step (train loss, validation loss at the virtual Θ', the
  finite-difference or double-backward Hessian-vector product); DDP all-reduces on *every* backward and does not
  support double backward, while :class:`~autosrh_ray.search.BiLevelSearch` asks for exactly the two reductions
  it needs through :class:`~autosrh_ray.search.GradSync` (Θ's gradient and the direction v, and α's gradient);
* α takes part in both forwards but must be reduced only from the validation loss, before Eq. 14's row
  normalisation — outside any DDP wrapper anyway;
* one code path for search and retraining keeps Θ's update identical in both, and sparse embedding gradients
  (``train.embedding_optimizer: sparse_adam``) are reduced natively with gloo (no DDP sparse caveats).
The cost is DDP's overlap of communication with the backward pass; for CTR models, whose step time is
dominated by the embedding lookup and the optimiser, that overlap is small (see ``benchmarks/ray_overhead.py``).

Sparse gradients: gloo implements sparse all-reduce (it all-gathers indices and values and sums them in rank
order, so every rank ends with the same coalesced tensor; checked in ``tests/distributed/test_sync.py``).
NCCL has none: there the sparse gradient is densified, all-reduced, and turned back into a sparse gradient over
the rows that *any* rank touched (an all-reduced row indicator), so SparseAdam updates exactly the same rows as
with gloo.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

from ..search import GradSync


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TorchDistributedSync(GradSync):
    """Averages Θ's gradients (dense or sparse COO) and α's gradient across the process group.

    Args:
        sparse_via_dense: reduce sparse gradients through a dense all-reduce (forced on for NCCL).
    """

    def __init__(self, sparse_via_dense: Optional[bool] = None):
        self.rank, self.size = world()
        if sparse_via_dense is None:
            sparse_via_dense = self.size > 1 and dist.get_backend() == "nccl"
        self.sparse_via_dense = sparse_via_dense

    def _dense(self, grad: torch.Tensor) -> torch.Tensor:
        out = grad.detach().clone()
        dist.all_reduce(out)
        return out.div_(self.size)

    def _sparse(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.coalesce()
        if self.sparse_via_dense:
            dense = self._dense(grad.to_dense())
            touched = torch.zeros(grad.shape[0], device=grad.device, dtype=dense.dtype)
            touched[grad._indices()[0]] = 1
            dist.all_reduce(touched)
            rows = torch.nonzero(touched).flatten()
            return torch.sparse_coo_tensor(rows.unsqueeze(0), dense[rows], grad.shape).coalesce()
        out = grad.clone()
        dist.all_reduce(out)
        return (out.coalesce() / self.size).coalesce()

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
