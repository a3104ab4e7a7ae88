"""Quantisation of kept values (``autosrh_ray/engine/quantize.py``) against a float64 reference per row (and per
block and dimension, ``dim`` scales): the fp16 scale and bias cover each group, every value reads back within half
its group's scale, int4 packs two codes per byte and unpacks to the same codes, the byte count is what the tensors
hold."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autosrh_ray.engine.quantize import LEVELS, dequantize, entry_rows, pack_int4, quantize, unpack_int4, values_at


def rows_of(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of rows with the given lengths (spread and offset differing per row), and their row pointers."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n, generator=g) * 10 ** float(torch.empty(1).uniform_(-3, 1, generator=g))
             + float(torch.randn(1, generator=g)) for n in lengths]
    indptr = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return torch.cat(parts), indptr


LENGTHS = [0, 1, 2, 7, 64, 0, 33, 5, 1, 16]


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_integer_codes_cover_each_row_and_read_back_within_half_a_step(precision):
    values, indptr = rows_of(LENGTHS * 20)
    values[indptr[3]:indptr[4]] = 0.25  # a constant row
    q = quantize(values, indptr, precision)
    back = dequantize(q, indptr)
    levels = LEVELS[precision]
    for r in range(indptr.numel() - 1):
        lo, hi = int(indptr[r]), int(indptr[r + 1])
        if lo == hi:
            continue
        x = values[lo:hi].double()
        scale, bias = float(q.scale[r]), float(q.bias[r])  # fp16, exactly representable in float64
        assert scale > 0 and bias <= x.min() and bias + (levels - 1) * scale >= x.max()
        # float64 reference of the codes: nearest level, clamped
        codes = torch.clamp(torch.round((x - bias) / scale), 0, levels - 1)
        assert torch.allclose(back[lo:hi].double(), bias + codes * scale, rtol=0, atol=1e-6 * max(1.0, abs(bias)))
        assert (back[lo:hi].double() - x).abs().max() <= scale / 2 + 1e-6 * max(1.0, x.abs().max().item())


def test_fp16_and_fp32_read_back_at_their_precision():
    values, indptr = rows_of(LENGTHS)
    assert torch.equal(dequantize(quantize(values, indptr, "fp32"), indptr), values)
    half = dequantize(quantize(values, indptr, "fp16"), indptr)
    assert ((half - values).abs() <= values.abs() * 2.0 ** -11 + 2.0 ** -25).all()


@pytest.mark.parametrize("count", [0, 1, 2, 9, 64])
def test_int4_packing_round_trips(count):
    codes = torch.randint(0, 16, (count,), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count / 2)
    assert torch.equal(unpack_int4(packed, count), codes)
    if count >= 2:
        assert int(packed[0]) == int(codes[0]) + 16 * int(codes[1])  # entry 2i low nibble, 2i+1 high


BITS = {"int8": 8, "int4": 4}  # the stored code widths: 2^b levels


def _fp16_down(x: float) -> float:
    """The largest fp16 <= x (numpy's fp16 rounding, then one step down where it rounded up)."""
    h = np.float16(x)
    return float(np.nextafter(h, np.float16(-np.inf)) if float(h) > x else h)


def _fp16_ulp(x: float) -> float:
    """The gap from fp16 ``x`` (> 0) to the next fp16 above it."""
    h = np.float16(x)
    return float(np.nextafter(h, np.float16(np.inf))) - float(h)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_scale_spans_the_row_with_2_to_the_bits_levels_and_the_top_code_is_used(precision):
    """The fp16 bias is the largest fp16 <= the row's minimum, and the fp16 scale (max - bias) / (2^b - 1) rounded
    up to fp16 (within one fp16 step of the float64 quotient): every one of the 2^b codes is a level of the row, and
    where the scale is a normal fp16 the row's maximum is stored as the top code 2^b - 1 (codes read from the
    bytes, int4 nibbles decoded here)."""
    values, indptr = rows_of(LENGTHS * 20, seed=5)
    q = quantize(values, indptr, precision)
    top = 2 ** BITS[precision] - 1
    data = q.data.numpy().astype(np.int64)
    codes = data if precision == "int8" else np.stack([data & 15, data >> 4], axis=1).reshape(-1)[:q.count]
    checked = 0
    for r in range(indptr.numel() - 1):
        lo, hi = int(indptr[r]), int(indptr[r + 1])
        x = values[lo:hi].double().numpy()
        if hi - lo < 2 or x.min() == x.max():
            continue
        bias, scale = float(q.bias[r]), float(q.scale[r])
        assert bias == _fp16_down(float(x.min())), r
        step = (float(x.max()) - bias) / top  # float64
        assert abs(scale - step) <= _fp16_ulp(scale), (r, scale, step)
        if scale >= 2.0 ** -14:  # a normal fp16: one step is at most 2^-10 of it, so max reads as > top - 1/2
            assert int(codes[lo + int(x.argmax())]) == top == int(codes[lo:hi].max()), r
            checked += 1
    assert checked > 50


def _reference_read(q, indptr: torch.Tensor, entries: list[int]) -> torch.Tensor:
    """float64 values of ``entries`` read back from q's stored tensors, decoded here: each entry's row found by a
    scan of ``indptr``, its code from its byte (int4: the lower nibble for an even entry, the upper for an odd
    one), bias + code · scale in float64; fp16/fp32 data as stored."""
    if q.precision in ("fp32", "fp16"):
        return torch.tensor([float(q.data[e]) for e in entries], dtype=torch.float64)
    starts = indptr.tolist()
    out = []
    for e in entries:
        row = max(r for r in range(len(starts) - 1) if starts[r] <= e < starts[r + 1])
        if q.precision == "int8":
            code = int(q.data[e])
        else:
            byte = int(q.data[e // 2])
            code = byte & 15 if e % 2 == 0 else byte >> 4
        out.append(float(q.bias[row]) + code * float(q.scale[row]))
    return torch.tensor(out, dtype=torch.float64)


def test_reading_some_entries_or_all_equals_a_float64_reading_of_the_stored_tensors():
    values, indptr = rows_of(LENGTHS * 3, seed=1)
    n = values.numel()
    picked = [0, 3, 4, 5, 40, n - 1]
    for precision in ("fp32", "fp16", "int8", "int4"):
        q = quantize(values, indptr, precision)
        entries = torch.tensor(picked)
        rows = entry_rows(indptr, n)[entries]
        some = values_at(q, entries, rows)
        assert some.dtype == torch.float32
        # float32 arithmetic against float64: one rounding of bias + code · scale (two for the product)
        torch.testing.assert_close(some.double(), _reference_read(q, indptr, picked), rtol=2.0 ** -22, atol=0)
        every = dequantize(q, indptr)
        torch.testing.assert_close(every.double(), _reference_read(q, indptr, list(range(n))), rtol=2.0 ** -22,
                                   atol=0)
        if precision == "fp32":
            assert torch.equal(every, values)
        elif precision == "fp16":
            assert np.array_equal(every.numpy(), values.numpy().astype(np.float16).astype(np.float32))


def test_bytes_are_the_stored_tensors():
    values, indptr = rows_of(LENGTHS)
    n, r = values.numel(), indptr.numel() - 1
    assert quantize(values, indptr, "fp32").nbytes == 4 * n
    assert quantize(values, indptr, "fp16").nbytes == 2 * n
    assert quantize(values, indptr, "int8").nbytes == n + 4 * r  # fp16 scale and bias per row
    assert quantize(values, indptr, "int4").nbytes == math.ceil(n / 2) + 4 * r


def test_bad_precision_and_values_beyond_fp16_are_one_line_errors():
    values, indptr = rows_of([3])
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize(values, indptr, "int2")
    with pytest.raises(ValueError, match="fp16 range"):
        quantize(values * 1e6, indptr, "int8")


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_fake_quantisation_reads_what_the_stored_codes_read_and_passes_the_gradient_straight_through(precision):
    from autosrh_ray.engine.quantize import fake_quantized

    values, indptr = rows_of(LENGTHS * 5, seed=3)
    rows = entry_rows(indptr, values.numel())
    stored = dequantize(quantize(values, indptr, precision), indptr)
    x = values.double().requires_grad_()
    read = fake_quantized(x, rows, indptr.numel() - 1, precision)
    assert read.dtype == torch.float64 and torch.equal(read.float(), stored)
    weights = torch.randn(values.numel(), dtype=torch.float64)
    (read * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # d read / d x = identity (straight through)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_dim_scales_cover_each_block_and_dimension_and_read_back_within_half_a_step(precision):
    """``dim`` scales: one fp16 scale and bias per (block, dimension), shared by every row of the block — checked
    group by group against float64, as the row-wise ones are row by row."""
    from autosrh_ray.engine.quantize import column_groups

    k, blocks, g = 8, 3, torch.Generator().manual_seed(4)
    counts = torch.randint(0, k + 1, (90,), generator=g)
    dims = torch.cat([torch.sort(torch.randperm(k, generator=g)[:int(c)]).values for c in counts])
    indptr = torch.zeros(91, dtype=torch.int64)
    indptr[1:] = torch.cumsum(counts, 0)
    # each dimension of its own spread and offset, as α's columns make them
    values = torch.randn(dims.numel(), generator=g) * (1 + dims) + dims * 0.5
    block_of_row = torch.arange(90) * blocks // 90
    groups = column_groups(dims, torch.repeat_interleave(block_of_row, counts), k)
    q = quantize(values, indptr, precision, (groups, blocks * k))
    assert q.scale.numel() == q.bias.numel() == blocks * k
    assert q.nbytes == math.ceil(values.numel() * (8 if precision == "int8" else 4) / 8) + 4 * blocks * k
    back = dequantize(q, indptr, groups)
    levels = LEVELS[precision]
    seen = 0
    for group in range(blocks * k):
        chosen = groups == group
        if not chosen.any():
            continue
        seen += 1
        x = values[chosen].double()
        scale, bias = float(q.scale[group]), float(q.bias[group])
        assert scale > 0 and bias <= x.min() and bias + (levels - 1) * scale >= x.max()
        codes = torch.clamp(torch.round((x - bias) / scale), 0, levels - 1)
        assert torch.allclose(back[chosen].double(), bias + codes * scale, rtol=0, atol=1e-6 * max(1.0, abs(bias)))
        assert (back[chosen].double() - x).abs().max() <= scale / 2 + 1e-6 * max(1.0, x.abs().max().item())
    assert seen == blocks * k
