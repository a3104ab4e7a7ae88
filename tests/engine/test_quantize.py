"""Row-wise quantisation of kept values (``autosrh_ray/quantize.py``) against a float64 per-row reference: the
fp16 scale and bias cover each row, every value reads back within half its row's scale, int4 packs two codes per
byte and unpacks to the same codes, the byte count is what the tensors hold."""
from __future__ import annotations

import math

import pytest
import torch

from autosrh_ray.quantize import (LEVELS, dequantize, pack_int4, quantize, unpack_int4, values_at, entry_rows)


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


def test_reading_some_entries_equals_reading_all():
    values, indptr = rows_of(LENGTHS * 3, seed=1)
    for precision in ("fp32", "fp16", "int8", "int4"):
        q = quantize(values, indptr, precision)
        entries = torch.tensor([0, 3, 4, 5, 40, values.numel() - 1])
        rows = entry_rows(indptr, values.numel())[entries]
        assert torch.equal(values_at(q, entries, rows), dequantize(q, indptr)[entries]), precision


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
    from autosrh_ray.quantize import fake_quantized

    values, indptr = rows_of(LENGTHS * 5, seed=3)
    rows = entry_rows(indptr, values.numel())
    stored = dequantize(quantize(values, indptr, precision), indptr)
    x = values.double().requires_grad_()
    read = fake_quantized(x, rows, indptr.numel() - 1, precision)
    assert read.dtype == torch.float64 and torch.equal(read.float(), stored)
    weights = torch.randn(values.numel(), dtype=torch.float64)
    (read * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # d read / d x = identity (straight through)
