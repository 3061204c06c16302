"""GGUF block packers of compressor/export/gguf_blocks.py, decoded by the `gguf` package's own dequantizer.

Exactness is measured, not assumed: Q4_0 and Q8_0 must give the lab's W = (q - zeros) * scales bit for bit;
Q4_1 is exact exactly where m = -zeros * scale fits fp16, and otherwise off by at most half an fp16 ulp of m.
"""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as T

from compressor.export import gguf_blocks as blocks
from compressor.export.requant import integer_zeros
from compressor.export.source import IntWeight, ScaledWeight


def _int_weight(bits: int, group: int, *, symmetric: bool, fractional: bool = False, n: int = 8, k: int = 128,
                seed: int = 0) -> IntWeight:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 2**bits, (n, k), generator=g).to(torch.uint8)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 1e-3).half()
    if symmetric:
        zeros = torch.full_like(scales, 2 ** (bits - 1))
    elif fractional:
        zeros = (torch.rand(n, k // group, generator=g) * (2**bits - 1)).half()
    else:
        zeros = torch.randint(0, 2**bits, (n, k // group), generator=g).half()
    return IntWeight(q, scales, zeros, bits, group)


@pytest.mark.parametrize("group", [32, 64, 128])
def test_q4_0_decodes_to_the_lab_weight_bit_for_bit(group):
    w = _int_weight(4, group, symmetric=True)
    data = blocks.pack_q4_0(w)
    assert data.shape == (8, 128 // 32 * 18)
    assert torch.equal(blocks.dequantize(data, T.Q4_0, (8, 128)), w.lab_dense())


@pytest.mark.parametrize("group", [32, 128])
def test_q8_0_decodes_to_the_lab_weight_bit_for_bit(group):
    w = _int_weight(8, group, symmetric=True)
    assert torch.equal(blocks.dequantize(blocks.pack_int8(w), T.Q8_0, (8, 128)), w.lab_dense())


@pytest.mark.parametrize("fractional", [False, True])
def test_q4_1_is_exact_where_the_min_fits_fp16_and_within_half_an_ulp_elsewhere(fractional):
    w = _int_weight(4, 32, symmetric=False, fractional=fractional)
    got = blocks.dequantize(blocks.pack_q4_1(w), T.Q4_1, (8, 128))
    ref = w.lab_dense()
    m32 = -w.zeros.float() * w.scales.float()  # (N, K/32): one block per group here
    fits = (m32.half().float() == m32).repeat_interleave(32, dim=1)
    assert torch.equal(got[fits], ref[fits])
    _, exp = torch.frexp(m32)  # |m| in [2**(exp-1), 2**exp): fp16 keeps 11 significant bits
    half_ulp16 = (torch.ldexp(torch.ones_like(m32), exp - 11).clamp(min=2.0**-24) / 2).repeat_interleave(32, dim=1)
    assert bool(((got - ref).abs() <= half_ulp16).all())
    # integer zeros on a random scale fit in some groups only; fractional zeros almost never
    assert 0 < fits.float().mean() < 1 if not fractional else fits.float().mean() < 0.5


def test_q4_1_with_zero_min_is_exact():
    w = _int_weight(4, 32, symmetric=False)
    w.zeros.zero_()  # m = 0 everywhere
    assert torch.equal(blocks.dequantize(blocks.pack_q4_1(w), T.Q4_1, (8, 128)), w.lab_dense())


def test_int8_rows_round_only_the_scale():
    g = torch.Generator().manual_seed(1)
    weight = torch.randint(-127, 128, (8, 128), generator=g).to(torch.int8)
    scale = torch.rand(8, generator=g) * 0.01 + 1e-4  # fp32, not fp16-representable
    w = ScaledWeight(weight, scale, dynamic_int8_inputs=True)
    got = blocks.dequantize(blocks.pack_scaled_int8(w), T.Q8_0, (8, 128))
    assert torch.equal(got, weight.float() * scale.half().float()[:, None])
    assert not torch.equal(got, w.lab_dense())


def test_requantize_uses_gguf_and_lands_close():
    W = torch.randn(8, 128, generator=torch.Generator().manual_seed(2)) * 0.02
    got = blocks.dequantize(blocks.requantize(W, T.Q8_0), T.Q8_0, (8, 128))
    assert 0 < (got - W).abs().max() <= W.abs().max() / 127


def test_integer_zeros_keeps_q_and_is_no_worse_than_rounding_the_zero():
    w = _int_weight(4, 32, symmetric=False, fractional=True, n=16, k=256)
    fit = integer_zeros(w)
    assert torch.equal(fit.q, w.q)
    assert torch.equal(fit.zeros.float(), fit.zeros.float().round())
    naive = IntWeight(w.q, w.scales, w.zeros.float().round().half(), 4, 32)
    ref = w.lab_dense()
    err_fit = (fit.lab_dense() - ref).pow(2).sum()
    err_naive = (naive.lab_dense() - ref).pow(2).sum()
    assert err_fit <= err_naive
