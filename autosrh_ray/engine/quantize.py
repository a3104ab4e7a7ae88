"""Quantisation of kept embedding values: 8- or 4-bit codes (int4: two codes per byte, the lower nibble first)
with an fp16 scale and bias per *group* of values, or the values themselves in fp16 or fp32. The groups are

* ``row`` (:data:`INT_SCALES`): per feature, as FBGEMM stores serving tables — 4 bytes per kept row;
* ``dim``: per (frequency block, dimension) — every value of dimension ``d`` of the features of block ``b`` shares
  one scale and bias (AutoSrh's α is per block and dimension too): L·K·4 bytes per table, however many rows.

A value ``x`` of group ``g`` is stored as ``code = round((x - bias[g]) / scale[g])`` and read back as
``bias[g] + code · scale[g]``. The fp16 bias is rounded *down* from the group's minimum and the fp16 scale *up* from
``(max - bias) / (levels - 1)``, so the codes cover the group and every value reads back within ``scale[g] / 2``.

Row-wise groups are given by row pointers over the entries (``indptr``, as :mod:`autosrh_ray.engine.packed` lays them
out); a group with no entries gets a scale and bias all the same (callers that drop empty rows pass the pointers of
the others). Pure PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

PRECISIONS = ("fp32", "fp16", "int8", "int4")
INT_SCALES = ("row", "dim")  # what shares an int8/int4 scale and bias: a feature's row, or a (block, dimension)
LEVELS = {"int8": 256, "int4": 16}
FP16_MAX = 65504.0


@dataclass
class QuantizedValues:
    """Kept values at one precision: ``data`` (fp32/fp16 values, or uint8 codes; int4 packs two per byte) and,
    for the integer precisions, the fp16 ``scale`` and ``bias`` of every group (row, or block and dimension)."""

    precision: str
    data: torch.Tensor
    count: int  # entries stored
    scale: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (values or codes, scales and biases)."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.bias) if t is not None)


def entry_rows(indptr: torch.Tensor, count: int) -> torch.Tensor:
    """(count,) the row of every entry under row pointers ``indptr``."""
    return torch.repeat_interleave(torch.arange(indptr.shape[0] - 1), (indptr[1:] - indptr[:-1]).long(),
                                   output_size=count)


def fp16_toward(x: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """fp16 ``x`` moved one step (ulp) towards -inf where ``down``, towards +inf elsewhere (finite values)."""
    bits = x.view(torch.int16).long()
    bits = torch.where(bits == -32768, 0, bits)  # -0 as +0
    away = torch.where(bits < 0, down, ~down)  # the step moves away from zero: the magnitude's bits grow
    stepped = torch.where(away, bits + 1, bits - 1)
    stepped = torch.where(bits == 0, torch.where(down, -32767, 1), stepped)  # ± the smallest subnormal
    return stepped.to(torch.int16).view(torch.float16)


def _row_range(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.zeros(n_rows).scatter_reduce(0, rows, values, "amin", include_self=False)
    hi = torch.zeros(n_rows).scatter_reduce(0, rows, values, "amax", include_self=False)
    return lo, hi


def column_groups(dims: torch.Tensor, blocks: torch.Tensor, dim: int) -> torch.Tensor:
    """The ``dim`` scale group of every entry: ``block · K + dimension`` (``dims``, ``blocks``: per entry)."""
    return blocks.long() * dim + dims.long()


def row_scale_bias(values: torch.Tensor, rows: torch.Tensor, n_rows: int,
                   levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 (scale, bias) per group (``rows``: the group of every value, ``n_rows`` groups) for ``levels`` codes:
    bias rounded down from the group's minimum, scale up from ``(max - bias) / (levels - 1)`` (a constant group:
    scale 1)."""
    lo, hi = _row_range(values, rows, n_rows)
    bias = lo.half()
    bias = torch.where(bias.float() > lo, fp16_toward(bias, torch.ones_like(lo, dtype=torch.bool)), bias)
    step = (hi - bias.float()) / (levels - 1)
    scale = step.half()
    scale = torch.where(scale.float() < step, fp16_toward(scale, torch.zeros_like(lo, dtype=torch.bool)), scale)
    scale = torch.where(scale.float() > 0, scale, torch.ones_like(scale))  # a constant row: any scale reads it
    return scale, bias


def _codes(values: torch.Tensor, rows: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
           levels: int) -> torch.Tensor:
    return torch.round((values - bias.float()[rows]) / scale.float()[rows]).clamp_(0, levels - 1)


def quantize(values: torch.Tensor, indptr: torch.Tensor, precision: str,
             groups: Optional[tuple[torch.Tensor, int]] = None) -> QuantizedValues:
    """``values`` (nnz,) in rows given by ``indptr`` (R+1,), stored at ``precision`` (one of :data:`PRECISIONS`);
    an integer precision's scale and bias per row, or per ``groups`` (the group of every value, the number of
    groups: :func:`column_groups` for ``dim`` scales)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    values = values.detach().float().reshape(-1)
    n = values.numel()
    if precision == "fp32":
        return QuantizedValues(precision, values.clone(), n)
    if n and float(values.abs().max()) > FP16_MAX:
        raise ValueError(f"{precision}: a kept value exceeds the fp16 range ({float(values.abs().max()):.3g})")
    if precision == "fp16":
        return QuantizedValues(precision, values.half(), n)
    levels = LEVELS[precision]
    rows, n_rows = groups if groups is not None else (entry_rows(indptr, n), indptr.shape[0] - 1)
    scale, bias = row_scale_bias(values, rows, n_rows, levels)
    codes = _codes(values, rows, scale, bias, levels).to(torch.uint8)
    data = pack_int4(codes) if precision == "int4" else codes
    return QuantizedValues(precision, data, n, scale, bias)


def fake_quantized(values: torch.Tensor, rows: torch.Tensor, n_rows: int, precision: str,
                   ranges: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """``values`` (n,) of groups ``rows`` as :func:`quantize` then :func:`dequantize` read them back — in the
    forward only: the gradient passes straight through (the straight-through estimator of quantisation-aware
    training). Same dtype as ``values``. Each group's range comes from ``values`` themselves (a row's entries all
    present), or from ``ranges``: (every stored value, its group) — ``dim`` groups span rows a batch never sees."""
    if precision == "fp32" or values.numel() == 0:
        return values
    v = values.detach().float()
    if precision == "fp16":
        read = v.half().float()
    else:
        levels = LEVELS[precision]
        every, of = (v, rows) if ranges is None else (ranges[0].detach().float(), ranges[1])
        scale, bias = row_scale_bias(every, of, n_rows, levels)
        read = bias.float()[rows] + _codes(v, rows, scale, bias, levels) * scale.float()[rows]
    return _StraightThrough.apply(values, read.to(values.dtype))


class _StraightThrough(torch.autograd.Function):
    """Forward: the read-back values; backward: the gradient of ``values`` as if it were the identity."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        return read

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def codes_at(q: QuantizedValues, entries: torch.Tensor) -> torch.Tensor:
    """The integer codes of ``entries`` (long, (n,)) of an int8/int4 ``q``."""
    if q.precision == "int8":
        return q.data[entries].long()
    byte = q.data[entries >> 1].long()
    return (byte >> ((entries & 1) * 4)) & 15


def values_at(q: QuantizedValues, entries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Float32 values of ``entries`` whose scale groups (rows, or blocks and dimensions) are ``rows``, read back
    from ``q`` (only those entries)."""
    if q.precision in ("fp32", "fp16"):
        return q.data[entries].float()
    return q.bias[rows].float() + codes_at(q, entries).float() * q.scale[rows].float()


def dequantize(q: QuantizedValues, indptr: torch.Tensor, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every stored value read back (float32, (nnz,)); ``groups``: every value's scale group where it is not its
    row (``dim`` scales)."""
    entries = torch.arange(q.count)
    if q.scale is None:
        return values_at(q, entries, entries)
    return values_at(q, entries, groups if groups is not None else entry_rows(indptr, q.count))


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes in [0, 15] → ceil(n/2) bytes, entry 2i in the lower nibble of byte i, 2i+1 in the upper."""
    padded = torch.cat([codes, codes.new_zeros(codes.numel() % 2)])
    return padded[0::2] | (padded[1::2] << 4)


def unpack_int4(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` codes :func:`pack_int4` packed."""
    return torch.stack([packed & 15, packed >> 4], dim=1).reshape(-1)[:count]
