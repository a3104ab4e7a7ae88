"""Kept values scored as the artifact stores them: fp32 or fp16 values, or int8/int4 codes with their fp16 scales
and biases (:mod:`autosrh_ray.engine.quantize`; per row, or per block and dimension), per segment of frequency
blocks — read back to float32 only for the entries a batch looks up. A loaded int8 model holds one byte per kept
value (int4: half a byte), not four.

To find an entry's scale and bias, a row-wise segment keeps the first entry of every kept row (int32 while they
fit): a binary search over them gives the row of a looked-up entry. A ``dim`` segment keeps the first entry of each
of its blocks: a binary search gives the block, the entry's dimension the rest. Pure PyTorch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .quantize import QuantizedValues, values_at


class StoredValues(nn.Module):
    """Segments of kept values as stored: ``segments`` (one :class:`~autosrh_ray.engine.quantize.QuantizedValues` each),
    their first entries ``entry_starts`` (ascending, the first 0) and, per segment, the first entry of each of its
    kept rows counted from the segment's start (``row_starts``; only read for row-wise integer codes) — or, for a
    segment with ``dim`` scales, the first entry of each of its blocks (``block_entries``; None for the others) and
    the embedding's ``dim``."""

    def __init__(self, segments: list[QuantizedValues], entry_starts: list[int], row_starts: list[torch.Tensor],
                 block_entries: Optional[list[Optional[torch.Tensor]]] = None, dim: int = 0):
        super().__init__()
        self.precisions = [q.precision for q in segments]
        self.counts = [q.count for q in segments]
        self.dim = int(dim)
        self.register_buffer("entry_starts", torch.tensor(entry_starts, dtype=torch.long))
        blocks = block_entries or [None] * len(segments)
        self.by_dim = [b is not None for b in blocks]
        for i, (q, starts, block) in enumerate(zip(segments, row_starts, blocks)):
            self.register_buffer(f"data{i}", q.data)
            self.register_buffer(f"scale{i}", q.scale)
            self.register_buffer(f"bias{i}", q.bias)
            by_row = q.scale is not None and block is None
            small = bool(starts.numel() == 0 or int(starts[-1]) < torch.iinfo(torch.int32).max)
            self.register_buffer(f"row_starts{i}", starts.to(torch.int32 if small else torch.int64) if by_row
                                 else None)
            self.register_buffer(f"block_entries{i}", block.long() if block is not None else None)

    @property
    def needs_dims(self) -> bool:
        """Whether :meth:`read` needs the entries' dimensions (a segment has ``dim`` scales)."""
        return any(self.by_dim)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def _segment(self, i: int) -> QuantizedValues:
        return QuantizedValues(self.precisions[i], getattr(self, f"data{i}"), self.counts[i],
                               getattr(self, f"scale{i}"), getattr(self, f"bias{i}"))

    def read(self, entries: torch.Tensor, dims: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float32 values of the kept ``entries`` (long, (n,)); ``dims``: their dimensions (needed where a segment
        has ``dim`` scales, :attr:`needs_dims`)."""
        if len(self.precisions) == 1:
            return self._read(0, entries, dims)
        out = torch.empty(entries.numel(), dtype=torch.float32, device=entries.device)
        segment = torch.searchsorted(self.entry_starts, entries, right=True) - 1
        for i in torch.unique(segment).tolist():
            chosen = segment == i
            out[chosen] = self._read(i, entries[chosen] - self.entry_starts[i],
                                     dims[chosen] if dims is not None else None)
        return out

    def _read(self, i: int, local: torch.Tensor, dims: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._segment(i)
        if q.scale is None:
            return values_at(q, local, local)
        if self.by_dim[i]:
            if dims is None:
                raise ValueError("values with scales per block and dimension are read with their dimensions")
            blocks = torch.searchsorted(getattr(self, f"block_entries{i}"), local, right=True) - 1
            return values_at(q, local, blocks * self.dim + dims.long())
        starts = getattr(self, f"row_starts{i}")
        rows = torch.searchsorted(starts, local.to(starts.dtype), right=True) - 1
        return values_at(q, local, rows)
