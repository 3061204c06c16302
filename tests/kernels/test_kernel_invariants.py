"""Kernel invariants at the shapes test_cpu_native.py and test_triton.py do not reach.

Per-token int8 activations keep every row's precision whatever its scale; the native int4 layout
maps each of several large groups (G > 256) to its own scales; the split-K GEMV covers K exactly once
when K is not a multiple of SPLIT_K * BLOCK_K.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kernels import cpu_native, dispatch
from kernels.modules import Int8DynamicLinear, QuantLinear
from kernels.pack import pack
from kernels.reference import int8_dynamic_matmul_ref, qmatmul_ref, quantize_per_token_int8
from tests.kernels.test_pack_reference import _quantized, sqnr_db

needs_int4 = pytest.mark.skipif(not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
                                reason="this torch has no _weight_int4pack_mm_for_cpu")
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


# --- W8A8: per-token activation scales -----------------------------------------------------------

def _rows_of_unequal_scale(m=6, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g) * torch.logspace(-3, 3, m)[:, None]  # (M, K): 6 decades apart


def test_per_token_int8_scale_is_per_row():
    x = _rows_of_unequal_scale()
    xq, x_scale = quantize_per_token_int8(x)
    assert x_scale.shape == (6, 1)
    torch.testing.assert_close(x_scale, x.abs().amax(dim=1, keepdim=True) / 127.0)
    assert torch.equal(xq.abs().amax(dim=1), torch.full((6,), 127, dtype=torch.int8))  # every row uses the range


def test_int8_dynamic_matmul_keeps_each_rows_sqnr():
    x = _rows_of_unequal_scale()
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, 64, generator=g)
    scale = W.abs().amax(dim=1) / 127.0  # (N,)
    weight = torch.round(W / scale[:, None]).to(torch.int8)
    ref = x @ (weight.float() * scale[:, None]).T  # int8 weight, exact activations
    module = Int8DynamicLinear.from_quantized(weight, scale)
    outputs = {
        "reference": int8_dynamic_matmul_ref(x, weight, scale),
        "dispatch": dispatch.int8_dynamic_matmul(x, weight, scale)[0],
        "module": module(x),
    }
    for name, y in outputs.items():
        for row in range(x.shape[0]):
            assert sqnr_db(y[row], ref[row]) > 30, (name, row)


# --- native int4pack with groups larger than 256 -------------------------------------------------

@needs_int4
@pytest.mark.parametrize("k,g", [(1024, 512), (1536, 768)])
def test_int4pack_several_large_groups_match_reference(k, g):
    n = 32
    q, scales, zeros, _ = _quantized(n, k, 4, g, seed=k + g)
    scales = scales * torch.logspace(0, 1, k // g).half()  # groups of a row differ: a mixed-up group shows
    # the native scale_and_zero [K/G', N, 2] repeats each group's (scale, zero) over its G / G' slices
    _, nw = cpu_native.to_int4pack(pack(q, 4), scales, zeros, group_size=g, in_features=k)
    rep = g // nw.group_size
    assert nw.group_size == 256 and rep > 1
    s_ref = scales.float().repeat_interleave(rep, dim=1).T  # (K/G', N)
    z_ref = ((8.0 - zeros.float()) * scales.float()).repeat_interleave(rep, dim=1).T
    torch.testing.assert_close(nw.scale[..., 0].float(), s_ref, rtol=1e-2, atol=0)
    torch.testing.assert_close(nw.scale[..., 1].float(), z_ref, rtol=1e-2, atol=1e-3)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=4, group_size=g)
    x = torch.randn(3, k)
    y = mod(x)
    assert mod.kernel_path == cpu_native.INT4PACK
    ref = qmatmul_ref(x, pack(q, 4), scales, zeros, bits=4, group_size=g, in_features=k)
    assert sqnr_db(y, ref) > 40


# --- split-K GEMV: K not a multiple of SPLIT_K * BLOCK_K -----------------------------------------

@needs_triton
@pytest.mark.parametrize("k,split_k", [(96, 2), (160, 2), (128, 3), (224, 4)])
def test_gemv_split_k_covers_k_exactly_once(k, split_k):
    from kernels.triton_gemv import qgemv

    n, g = 8, 32
    q, s, z, _ = _quantized(n, k, 4, g, seed=k * 10 + split_k)
    qw = pack(q, 4)
    x = torch.randn(2, k).half()
    y = qgemv(x, qw, s, z, bits=4, group_size=g, in_features=k, split_k=split_k, poison=True, autotune="small")
    ref = qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=g, in_features=k)
    assert not y.isnan().any()
    assert sqnr_db(y, ref) > 40
