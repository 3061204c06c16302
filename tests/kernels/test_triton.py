"""Every Triton kernel against the torch reference under TRITON_INTERPRET=1 (tests/conftest.py), small shapes.

Outputs are poisoned with NaN before each launch, so an element the kernel forgets to write fails the test.
"""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

from kernels.kv import dequantize_kv, dequantize_kv_ref, quantize_kv, quantize_kv_ref  # noqa: E402
from kernels.pack import pack  # noqa: E402
from kernels.reference import qmatmul_ref  # noqa: E402
from tests.kernels.test_pack_reference import _quantized, sqnr_db  # noqa: E402


def _case(n, k, bits, g, seed):
    q, scales, zeros, _ = _quantized(n, k, bits, g, seed=seed)
    return pack(q, bits), scales, zeros


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("g", [32, 64])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_gemv_matches_reference(bits, g, m):
    from kernels.triton_gemv import qgemv

    n, k = 40, 128  # n not a multiple of the block: masked edge
    qw, s, z = _case(n, k, bits, g, seed=bits * 1000 + g + m)
    dtype = torch.float16 if m % 2 else torch.bfloat16
    x = torch.randn(m, k).to(dtype)
    y = qgemv(x, qw, s, z, bits=bits, group_size=g, in_features=k, split_k=2, poison=True)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=bits, group_size=g, in_features=k)
    assert y.dtype == dtype and not y.isnan().any()
    assert sqnr_db(y, ref) > 40


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gemm_matches_reference(bits, dtype):
    from kernels.triton_gemm import qgemm

    m, n, k, g = 20, 48, 96, 32
    qw, s, z = _case(n, k, bits, g, seed=bits + 7)
    x = torch.randn(m, k).to(dtype)
    y = qgemm(x, qw, s, z, bits=bits, group_size=g, in_features=k, poison=True)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=bits, group_size=g, in_features=k)
    assert not y.isnan().any()
    assert sqnr_db(y, ref) > 40


def test_custom_op_traces_with_torch_compile():
    from kernels.triton_ops import qmatmul_triton

    n, k, g = 32, 64, 32
    qw, s, z = _case(n, k, 4, g, seed=1)
    x = torch.randn(2, 3, k).half()
    torch.library.opcheck(qmatmul_triton, (x, qw, s, z, 4, g, k), test_utils=("test_schema", "test_faketensor"))
    fn = torch.compile(lambda t: qmatmul_triton(t, qw, s, z, 4, g, k) * 2, backend="eager", fullgraph=True)
    y = fn(x)
    assert y.shape == (2, 3, n)
    assert sqnr_db(y / 2, qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=g, in_features=k)) > 40


def test_autotune_mode_switches_without_reload(monkeypatch):
    from kernels.triton_config import autotune_mode

    monkeypatch.setenv("KERNELS_AUTOTUNE", "full")
    assert autotune_mode() == "full" and autotune_mode("small") == "small"
    with pytest.raises(ValueError, match="'fast'"):
        autotune_mode("fast")


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("m", [1, 64])
def test_dispatch_uses_triton_on_cuda(m):
    from kernels.modules import QuantLinear

    q, s, z, perm = _quantized(256, 512, 4, 128, seed=0, act_order=True)
    mod = QuantLinear.from_quantized(q, s, z, bits=4, group_size=128, perm=perm).cuda()
    x = torch.randn(m, 512, device="cuda", dtype=torch.float16)
    y = mod(x)
    assert mod.kernel_path == ("triton-gemv" if m == 1 else "triton-gemm")
    ref = qmatmul_ref(x.float(), mod.qweight, s.cuda(), z.cuda(), bits=4, group_size=128, in_features=512,
                      perm=mod.perm)
    assert sqnr_db(y, ref) > 40
