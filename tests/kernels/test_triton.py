"""Every Triton kernel against the torch reference under TRITON_INTERPRET=1 (tests/conftest.py), tiny shapes.

Outputs are poisoned with NaN before each single-pass launch, so an element no program writes fails the test;
split-K launches add into a zeroed y, where a K range covered twice or never fails the SQNR bound. Shapes
leave tails on purpose: N not a multiple of BLOCK_N, K not a multiple of BLOCK_K nor (per channel) of 32.
"""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

from kernels.kv import dequantize_kv, dequantize_kv_ref, quantize_kv, quantize_kv_ref  # noqa: E402
from kernels.pack import pack  # noqa: E402
from kernels.reference import qmatmul_ref  # noqa: E402
from tests.kernels.test_pack_reference import _quantized, sqnr_db  # noqa: E402

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
# fp32 math throughout: the bound is the output's rounding (bf16 ~49 dB, fp16 ~73 dB, fp32 ~130 dB measured)
MIN_SQNR = {F32: 100, F16: 60, BF16: 42}


def _run(kernel, bits, m, n, k, g, dtype, act_order, bias, split, seed):
    q, s, z, perm = _quantized(n, k, bits, g, seed=seed, act_order=act_order)
    qw = pack(q, bits)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    y = kernel(x, qw, s, z, bits=bits, group_size=g, in_features=k, perm=perm, bias=b, split_k=split, poison=True)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=bits, group_size=g, in_features=k, perm=perm,
                      bias=None if b is None else b.float())
    assert y.dtype == dtype and y.shape == (m, n)
    assert not y.isnan().any()
    assert sqnr_db(y, ref) > MIN_SQNR[dtype], sqnr_db(y, ref)


# (bits, M, N, K, G, dtype, act_order, bias, split_k): every width with groups 32/64 and per channel, K tails
# (100: per channel, not a multiple of 32; 4-bit rows of 50 bytes are padded to whole words), split 2 and 3
GEMV_CASES = [
    (2, 1, 20, 96, 32, F16, False, True, 1), (2, 1, 20, 96, 96, BF16, True, False, 1),
    (3, 1, 20, 96, 32, F32, True, True, 2), (3, 2, 24, 100, 100, F16, False, False, 1),
    (4, 1, 20, 96, 32, BF16, False, True, 1), (4, 1, 40, 192, 64, F16, True, True, 2),
    (4, 1, 20, 100, 100, F32, False, False, 2), (8, 1, 20, 96, 32, F16, True, False, 3),
    (8, 2, 24, 64, 64, BF16, False, True, 1),
]


@pytest.mark.parametrize("bits,m,n,k,g,dtype,act_order,bias,split", GEMV_CASES)
def test_gemv_matches_reference(bits, m, n, k, g, dtype, act_order, bias, split):
    from kernels.triton_gemv import qgemv

    _run(qgemv, bits, m, n, k, g, dtype, act_order, bias, split, seed=bits * 100 + k + m)


# M buckets 2 (decode batch), 17 (just above 16), 70 (several M blocks); splits only where atomics run here
GEMM_CASES = [
    (2, 17, 20, 96, 32, F16, True, True, 2), (2, 70, 24, 128, 128, F32, False, False, 1),
    (3, 2, 20, 96, 96, BF16, False, True, 1), (3, 17, 24, 128, 32, F16, True, False, 1),
    (4, 2, 40, 192, 64, F16, True, True, 2), (4, 17, 20, 100, 100, BF16, False, True, 1),
    (4, 70, 20, 128, 64, F32, True, True, 3), (8, 17, 24, 96, 32, F32, False, True, 1),
    (8, 70, 20, 64, 64, BF16, True, False, 1),
]


@pytest.mark.parametrize("bits,m,n,k,g,dtype,act_order,bias,split", GEMM_CASES)
def test_gemm_matches_reference(bits, m, n, k, g, dtype, act_order, bias, split):
    from kernels.triton_gemm import qgemm

    _run(qgemm, bits, m, n, k, g, dtype, act_order, bias, split, seed=bits * 1000 + k + m)


@pytest.mark.parametrize("bits,g,k", [(2, 32, 96), (3, 100, 100), (4, 64, 128), (8, 32, 64)])
def test_dequantize_to_dense_matches_reference(bits, g, k):
    from kernels.reference import dequantize
    from kernels.triton_layout import pack_scales, to_gpu_words
    from kernels.triton_unpack import dequantize_t

    q, s, z, _ = _quantized(20, k, bits, g, seed=bits + k)
    w_t = dequantize_t(to_gpu_words(pack(q, bits), bits, k), pack_scales(s, z), bits=bits, group_size=g,
                       in_features=k, dtype=F32)
    ref = dequantize(pack(q, bits), s, z, bits=bits, group_size=g, in_features=k)
    torch.testing.assert_close(w_t.T, ref, rtol=1e-6, atol=1e-6)  # f * a + c: one fp32 rounding from (q - z) * s


def test_long_prefills_take_the_dense_path(monkeypatch):
    from kernels import triton_ops

    monkeypatch.setattr(triton_ops, "DENSE_FROM_M", 8)
    q, s, z, perm = _quantized(24, 64, 4, 32, seed=3, act_order=True)
    qw, bias = pack(q, 4), torch.randn(24).half()
    x = torch.randn(9, 64).half()
    y = triton_ops.qmatmul_2d(x, qw, s, z, perm, bias, 4, 32, 64)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=32, in_features=64, perm=perm, bias=bias.float())
    assert triton_ops.triton_path(9, 24, 64) == triton_ops.DENSE and triton_ops.triton_path(7, 24, 64) == "triton-gemm"
    assert sqnr_db(y, ref) > MIN_SQNR[F16]


@pytest.mark.parametrize("kernel", ["qgemv", "qgemm"])
def test_zero_rows_and_bad_inputs(kernel):
    from kernels import triton_gemm, triton_gemv

    fn = getattr(triton_gemv if kernel == "qgemv" else triton_gemm, kernel)
    q, s, z, _ = _quantized(16, 64, 4, 32, seed=0)
    qw = pack(q, 4)
    assert fn(torch.zeros(0, 64).half(), qw, s, z, bits=4, group_size=32, in_features=64).shape == (0, 16)
    with pytest.raises(ValueError, match="reshape"):
        fn(torch.zeros(1, 2, 64).half(), qw, s, z, bits=4, group_size=32, in_features=64)
    with pytest.raises(ValueError, match="float64"):
        fn(torch.zeros(1, 64, dtype=torch.float64), qw, s, z, bits=4, group_size=32, in_features=64)
    with pytest.raises(ValueError, match="contiguous"):
        fn(torch.zeros(1, 128).half()[:, ::2], qw, s, z, bits=4, group_size=32, in_features=64)


def test_custom_op_schema_fake_and_torch_compile():
    from kernels.triton_ops import qmatmul_triton

    n, k, g = 24, 64, 32
    q, s, z, perm = _quantized(n, k, 4, g, seed=1, act_order=True)
    qw, bias = pack(q, 4), torch.randn(n).half()
    x = torch.randn(2, 3, k).half()
    for args in ((x, qw, s, z, None, None, 4, g, k), (x, qw, s, z, perm, bias, 4, g, k)):
        torch.library.opcheck(qmatmul_triton, args, test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda t: qmatmul_triton(t, qw, s, z, perm, bias, 4, g, k) * 2, backend="eager",
                       fullgraph=True)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=g, in_features=k, perm=perm, bias=bias.float())
    y = fn(x)
    assert y.shape == (2, 3, n) and sqnr_db(y / 2, ref) > MIN_SQNR[F16]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis", [-1, -2])
def test_kv_kernels_match_reference(bits, axis):
    from kernels.triton_kv import dequantize_kv_triton, quantize_kv_triton

    g = 16
    x = (torch.randn(1, 2, 32, 32) * 3).half()  # (B, H, T, D): axis -1 per token, -2 per channel (KIVI keys)
    p, s, z = quantize_kv_ref(x, bits, g, axis)
    pt, st, zt = quantize_kv_triton(x.movedim(axis, -1), bits, g, poison=True)
    assert torch.equal(pt, p) and torch.equal(st, s) and torch.equal(zt, z)
    length = x.shape[axis]
    y = dequantize_kv_ref(p, s, z, bits=bits, group_size=g, axis=axis, length=length)
    yt = dequantize_kv_triton(p, s, z, bits=bits, group_size=g, length=length, poison=True).movedim(-1, axis)
    assert torch.equal(yt, y)
    step = s.float().max()
    assert (y.float() - x.float()).abs().max() <= step / 2 + 1e-3  # round to nearest: half a step at most


def test_kv_public_api_round_trip_on_cpu():
    x = torch.randn(1, 2, 64, 32)
    p, s, z = quantize_kv(x, 4, 32, axis=2)
    assert p.shape == (1, 2, 32, 32) and s.shape == (1, 2, 32, 2)
    y = dequantize_kv(p, s, z, bits=4, group_size=32, axis=2, length=64, dtype=torch.float32)
    assert y.shape == x.shape and sqnr_db(y, x) > 15
    with pytest.raises(ValueError, match="group_size=24"):
        quantize_kv(x, 4, 24, axis=2)
