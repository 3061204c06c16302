"""FP8Linear on CPU: an exact fp16 copy of the E4M3 values for the GEMV (issue 20: the reference path
dequantized the whole weight on every call, decode 4-8x slower than fp32), fp32 from M = 4, the state dict
still FP8, and bytes that count the copy as held but never widen FP8 in a float-width projection."""

from __future__ import annotations

import pytest
import torch

from kernels import cpu_native
from kernels.modules import FP8Linear
from kernels.reference import fp8_matmul_ref
from tests.kernels.test_pack_reference import sqnr_db


def _fp8_module(n=64, k=96, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w[0, :8] = torch.tensor([448.0, -448.0, 2.0**-9, -(2.0**-9), 0.0, 2.0**-6, 1.5, 240.0])  # range ends
    w_scale = w.abs().amax(dim=1) / 448
    w8 = (w / w_scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    return FP8Linear.from_quantized(w8, w_scale, bias=torch.randn(n, generator=g) if bias else None)


def test_fp16_copy_holds_the_fp8_values_exactly():
    mod = _fp8_module()
    w16, scale = cpu_native.fp8_to_fp16(mod.weight, mod.weight_scale)
    assert torch.equal((w16.float() / cpu_native.FP8_SHIFT).to(torch.float8_e4m3fn).view(torch.uint8),
                       mod.weight.view(torch.uint8))
    # the product a matmul sees is the FP8 weight's, bit for bit (powers of two cancel exactly)
    assert torch.equal(w16.float() * scale[:, None], mod.weight.float() * mod.weight_scale[:, None])


@pytest.mark.parametrize("m,path", [(1, cpu_native.FP8_FP16), (3, cpu_native.FP8_FP16), (4, cpu_native.FP8_FP32),
                                    (33, cpu_native.FP8_FP32)])
@pytest.mark.parametrize("bias", [False, True])
def test_cpu_path_matches_reference(m, path, bias):
    mod = _fp8_module(bias=bias)
    x = torch.randn(1, m, 96)  # M = m rows
    y = mod(x)
    assert mod.kernel_path == path and y.shape == (1, m, 64) and y.dtype == x.dtype
    ref = fp8_matmul_ref(x, mod.weight, mod.weight_scale, mod.bias)
    if path == cpu_native.FP8_FP32:  # exact weights, fp32 math: only the summation order differs
        torch.testing.assert_close(y, ref)
    else:  # activations and output rounded to fp16 (11 bits): ~70 dB, far below FP8's own ~30 dB
        assert sqnr_db(y, ref) > 60


def test_fp16_overflow_and_inf_fall_back_to_fp32():
    mod = _fp8_module()
    x = torch.randn(1, 96) * 1e6  # past fp16's 65504
    y = mod(x)
    assert mod.kernel_path == cpu_native.FP8_FP32 and torch.isfinite(y).all()
    torch.testing.assert_close(y, fp8_matmul_ref(x, mod.weight, mod.weight_scale), rtol=1e-4, atol=0)
    x = torch.randn(1, 96)
    x[0, 3] = float("inf")
    assert torch.equal(mod(x).isnan(), fp8_matmul_ref(x, mod.weight, mod.weight_scale).isnan())


def test_runtime_copy_is_held_never_saved_and_dropped_on_load_and_move():
    from compressor.engine.report import weight_bytes, weight_bytes_at

    mod = _fp8_module()
    stored = weight_bytes(mod)
    assert weight_bytes_at(mod, 2) == 64 * 96 + 64 * 2  # FP8 stays 1 byte at a 16-bit float width
    y = mod(torch.randn(1, 96))
    assert weight_bytes(mod) == stored + 64 * 96 * 2 + 64 * 4  # the fp16 copy and its scales, held
    assert weight_bytes_at(mod, 2) == 64 * 96 + 64 * 2  # runtime layouts are not what another device holds
    sd = mod.state_dict()
    assert set(sd) == {"weight", "weight_scale"} and sd["weight"].dtype == torch.float8_e4m3fn
    other = _fp8_module(seed=1)
    other(torch.randn(1, 96))
    other.load_state_dict(sd)  # the old copy must not survive new weights
    assert torch.equal(other(torch.ones(1, 96)), mod(torch.ones(1, 96)))
    mod.to(torch.bfloat16)
    assert "native_weight" not in dict(mod.named_buffers()) and mod.weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(mod(torch.ones(1, 96, dtype=torch.bfloat16)).float(), y.new_tensor(
        fp8_matmul_ref(torch.ones(1, 96), mod.weight, mod.weight_scale)), rtol=1e-2, atol=1e-2)
