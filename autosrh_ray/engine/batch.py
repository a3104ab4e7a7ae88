"""A mini-batch of encoded rows, and batching of in-memory splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """ids (B, F) long, values (B, F) float, labels (B,) float."""

    ids: torch.Tensor
    values: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> "Batch":
        dtype = dtype or self.values.dtype
        return Batch(self.ids.to(device), self.values.to(device, dtype), self.labels.to(device, dtype))

    @staticmethod
    def from_numpy(ids: np.ndarray, values: np.ndarray, labels: np.ndarray) -> "Batch":
        def tensor(x, dtype):  # copies only when needed (wrong dtype, not contiguous, read-only Arrow memory)
            return torch.from_numpy(np.require(x, dtype=dtype, requirements=["C", "W"]))

        return Batch(tensor(ids, np.int64), tensor(values, np.float32), tensor(labels, np.float32))


def iterate_batches(split, batch_size: int, shuffle: bool = False, seed: int = 0,
                    drop_last: bool = False) -> Iterator[Batch]:
    """Batches of an in-memory :class:`~autosrh_ray.data.prepared.EncodedSplit`; shuffled with ``seed``."""
    n = len(split)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield Batch.from_numpy(split.ids[idx], split.values[idx], split.labels[idx])


def loss_function(task: str):
    """Mean log loss on logits (classification) or mean squared error (regression)."""
    if task == "classification":
        return F.binary_cross_entropy_with_logits
    return F.mse_loss
