"""Sparse embedding gradient sync: the row-sparse exchange against a dense all-reduce of the M×K gradient.

    python benchmarks/sync_bytes.py [--quick] [--json PATH]

Two gloo workers on this machine (torch.multiprocessing, one torch thread each), a float32 embedding table of
M rows × K = 64 at M = 1M and 10M (one process pair per M). Every step each rank gets the gradient that
``nn.Embedding(sparse=True)`` gives for a batch of 4096 rows × 39 fields (uncoalesced, one gradient row per
looked-up id): field f owns rows [f·M/39, (f+1)·M/39), and a field's ids follow a Zipf law of exponent 1.1 over
its rows (``dataset.synthetic.zipf_exponent``'s default; rank 1 = the most frequent value, as the prepared
vocabulary orders ids), different draws per rank and step.

Measured side by side in the same processes, alternating which goes first each step, on the same gradients:

* sparse: ``TorchDistributedSync.theta`` — the row-sparse exchange (coalesce, all-gather counts, all-gather the
  padded ids and rows, sum into the union in rank order, divide by W);
* dense: what it replaced on NCCL — coalesce, densify into an M×K buffer (allocated once and zeroed each step,
  which spares the dense side the allocation the old code paid each step), all-reduce it, all-reduce an M-row
  indicator of touched rows, and take the union's rows back as a sparse gradient.

Bytes sent per step per rank are counted from the tensors each collective is handed (the sync module's
``torch.distributed`` is wrapped by a counter), with the ring model (gloo's ring algorithms and NCCL's):
all-gather of n elements of b bytes each sends n·b·(W−1); all-reduce of n elements sends 2·(W−1)/W·n·b. So the
sparse exchange sends (W−1)·(8 + c·8 + c·K·4) with c the largest count of unique rows over ranks, and a dense
all-reduce of the M×K float32 gradient 2·(W−1)/W·M·K·4 (the old path also all-reduced the M-row indicator,
2·(W−1)/W·M·4 more; the ``bytes_ratio_*`` keys leave it out, against the M×K all-reduce alone).
Step time: per step, the slower rank's time from a barrier to having the synchronised sparse gradient; medians
over the timed steps (after warm-up steps). Each step checks that both give the same rows and the same values
(within float32 rounding: :data:`TOLERANCE` of the largest value); a step where they differ stops the run with
an error naming it (the command exits non-zero) — ``max_abs_diff`` is the largest difference over both ranks.

Prints one flat JSON object (also written to --json), ratios included. ``--quick``: 5 timed steps per M after 1
warm-up step (a few minutes on 2 cores); without it 20 after 2. Peak memory: about 3 GB per rank at M = 10M (the
dense side's M×K buffer is 2.56 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

K = 64
BATCH = 4096
FIELDS = 39
ZIPF = 1.1
WORLD = 2
TOLERANCE = 1e-6  # relative to the step's largest value: float32 sums of the same terms, at most reordered


class MismatchError(AssertionError):
    """The row-sparse exchange and the dense all-reduce gave different rows or values."""


class _Counter:
    """Stands in for ``torch.distributed`` in the sync module; adds up the bytes each collective sends (ring)."""

    def __init__(self, world: int):
        self.world = world
        self.bytes = 0.0

    def __getattr__(self, name):
        return getattr(dist, name)

    def all_gather(self, outputs, tensor, *args, **kwargs):
        assert all(o.shape == tensor.shape for o in outputs)  # equal sizes, as NCCL needs
        self.bytes += tensor.numel() * tensor.element_size() * (self.world - 1)
        return dist.all_gather(outputs, tensor, *args, **kwargs)

    def all_reduce(self, tensor, *args, **kwargs):
        self.bytes += 2 * (self.world - 1) / self.world * tensor.numel() * tensor.element_size()
        return dist.all_reduce(tensor, *args, **kwargs)


def _zipf_cdf(rows: int) -> np.ndarray:
    p = np.arange(1, rows + 1, dtype=np.float64) ** -ZIPF
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


def _batch_grad(cdf: np.ndarray, m: int, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
    """The uncoalesced sparse gradient of a 4096 × 39 lookup (one row per id, as the embedding's backward)."""
    per_field = m // FIELDS
    ids = np.concatenate([f * per_field + np.minimum(np.searchsorted(cdf, rng.random(BATCH)), per_field - 1)
                          for f in range(FIELDS)])
    values = torch.randn(len(ids), K, generator=gen)
    return torch.sparse_coo_tensor(torch.from_numpy(ids).unsqueeze(0), values, (m, K), check_invariants=False)


def _dense_reference(counter: _Counter, grad: torch.Tensor, buffer: torch.Tensor, touched: torch.Tensor):
    """The old NCCL path: densify, all-reduce, all-reduce a touched-row indicator, back to sparse."""
    grad = grad.coalesce()
    rows = grad._indices()[0]
    buffer.zero_()
    buffer.index_copy_(0, rows, grad._values())
    counter.all_reduce(buffer)
    buffer.div_(counter.world)
    touched.zero_()
    touched[rows] = 1
    counter.all_reduce(touched)
    union = torch.nonzero(touched).flatten()
    return torch.sparse_coo_tensor(union.unsqueeze(0), buffer[union], grad.shape, check_invariants=False).coalesce()


def _check_same(sparse: torch.Tensor, dense: torch.Tensor, where: str) -> None:
    """Raise :class:`MismatchError` unless both synchronised gradients have the same rows and values within
    float32 rounding (:data:`TOLERANCE` relative to the largest value; a NaN fails)."""
    if not torch.equal(sparse._indices(), dense._indices()):
        raise MismatchError(f"{where}: the sparse exchange and the dense all-reduce disagree on the rows "
                            f"({sparse._nnz()} against {dense._nnz()})")
    if not dense._nnz():
        return
    diff = (sparse._values() - dense._values()).abs().max().item()
    allowed = TOLERANCE * max(1.0, dense._values().abs().max().item())
    if not diff <= allowed:
        raise MismatchError(f"{where}: the sparse exchange and the dense all-reduce differ by {diff:.3g} "
                            f"(more than {allowed:.3g})")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank: int, port: int, m: int, warmup: int, steps: int, out: str) -> None:
    import autosrh_ray.distributed.sync as sync_module

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        counter = _Counter(WORLD)
        sync_module.dist = counter
        sync = sync_module.TorchDistributedSync()
        cdf = _zipf_cdf(m // FIELDS)
        rng, gen = np.random.default_rng([rank, m]), torch.Generator().manual_seed(rank)
        buffer = torch.empty(m, K)
        touched = torch.empty(m)
        rows_max, sent, times = [], {"sparse": [], "dense": []}, {"sparse": [], "dense": []}
        max_diff = 0.0
        for step in range(warmup + steps):
            grad = _batch_grad(cdf, m, rng, gen)
            results = {}
            for name in (("sparse", "dense") if step % 2 == 0 else ("dense", "sparse")):
                dist.barrier()
                before = counter.bytes
                start = time.perf_counter()
                if name == "sparse":
                    results[name] = sync.theta([grad])[0]
                else:
                    results[name] = _dense_reference(counter, grad, buffer, touched)
                elapsed = time.perf_counter() - start
                if step >= warmup:
                    times[name].append(elapsed)
                    sent[name].append(counter.bytes - before)
            a, b = results["sparse"], results["dense"]
            _check_same(a, b, f"M = {m:,}, step {step}, rank {rank}")
            if b._nnz():
                max_diff = max(max_diff, (a._values() - b._values()).abs().max().item())
            mine = torch.tensor([grad.coalesce()._nnz()])
            dist.all_reduce(mine, op=dist.ReduceOp.MAX)
            if step >= warmup:
                rows_max.append(int(mine.item()))
            del grad, results, a, b
        worst = torch.tensor([max_diff], dtype=torch.float64)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        max_diff = float(worst.item())
        slowest = torch.tensor([times["sparse"], times["dense"]], dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # per step, the slower rank's time
        rss = torch.tensor([_peak_rss_mib()])
        dist.all_reduce(rss, op=dist.ReduceOp.MAX)
        if rank == 0:
            mk_allreduce = 2 * (WORLD - 1) / WORLD * m * K * 4
            fig = {
                "unique_rows_per_rank_max": statistics.median(rows_max),
                "ids_per_rank": BATCH * FIELDS,
                "bytes_sparse": statistics.median(sent["sparse"]),
                "bytes_dense_mk_allreduce": mk_allreduce,
                "bytes_dense_old_path": statistics.median(sent["dense"]),
                "step_s_sparse": statistics.median(slowest[0].tolist()),
                "step_s_dense": statistics.median(slowest[1].tolist()),
                "max_abs_diff": max_diff,
                "peak_rss_mib_per_rank": float(rss.item()),
            }
            expected_sparse = (WORLD - 1) * (8 + fig["unique_rows_per_rank_max"] * (8 + K * 4))
            assert abs(fig["bytes_sparse"] - expected_sparse) < 1, (fig["bytes_sparse"], expected_sparse)
            assert abs(fig["bytes_dense_old_path"] - mk_allreduce * (K + 1) / K) < 1
            Path(out).write_text(json.dumps(fig))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 timed steps per M (1 warm-up)")
    parser.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    args = parser.parse_args()
    warmup, steps = (1, 5) if args.quick else (2, 20)
    out: dict = {"world": WORLD, "K": K, "batch": BATCH, "fields": FIELDS, "zipf_exponent": ZIPF,
                 "timed_steps": steps, "warmup_steps": warmup, "torch": torch.__version__, "cpus": os.cpu_count()}
    started = time.perf_counter()
    for m, tag in ((1_000_000, "m1m"), (10_000_000, "m10m")):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "fig.json")
            mp.spawn(_worker, args=(_free_port(), m, warmup, steps, path), nprocs=WORLD, join=True)
            fig = json.loads(Path(path).read_text())
        out.update({f"{k}_{tag}": v for k, v in fig.items()})
        out[f"bytes_ratio_sparse_to_dense_{tag}"] = fig["bytes_sparse"] / fig["bytes_dense_mk_allreduce"]
        out[f"bytes_ratio_sparse_to_dense_old_path_{tag}"] = fig["bytes_sparse"] / fig["bytes_dense_old_path"]
        out[f"time_ratio_sparse_to_dense_{tag}"] = fig["step_s_sparse"] / fig["step_s_dense"]
    out["total_s"] = time.perf_counter() - started
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
