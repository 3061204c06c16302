"""Native CPU kernels (int4pack, int8pack) against the reference, and the canonical state dict around them.

Tolerance: the native kernels compute with bf16 activations and bf16 scales, so they match the fp32
reference to SQNR > 40 dB (relative RMS error < 1%), not bit for bit.
"""

import pytest
import torch

from kernels import cpu_native
from kernels.modules import QuantLinear
from kernels.pack import pack
from kernels.reference import qmatmul_ref
from tests.kernels.test_pack_reference import _quantized, sqnr_db

needs_int4 = pytest.mark.skipif(not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
                                reason="this torch has no _weight_int4pack_mm_for_cpu")


@pytest.mark.parametrize("n", [32, 64, 96, 4096 + 32])
def test_int4pack_layout_inverse_exact(n):
    q = torch.randint(0, 16, (n, 64), dtype=torch.uint8)
    native = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    assert torch.equal(cpu_native.from_int4pack(native, 64), pack(q, 4))


@needs_int4
@pytest.mark.parametrize("bits,g,act_order,zeros_kind", [
    (4, 32, False, "fractional"), (4, 128, True, "fractional"), (4, 512, False, "symmetric"),
    (8, 512, False, "symmetric"), (8, 512, True, "fractional"),
])
def test_native_module_matches_reference(bits, g, act_order, zeros_kind):
    n, k = 64, 512
    q, scales, zeros, perm = _quantized(n, k, bits, g, seed=bits * g, act_order=act_order)
    if zeros_kind == "symmetric":
        zeros = torch.full_like(zeros, 2 ** (bits - 1))
    bias = torch.randn(n)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g, bias=bias, perm=perm)
    canonical_bytes = mod.qweight.numel() * mod.qweight.element_size()
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, k, dtype=dtype)
        y = mod(x)
        assert mod.kernel_path == ("cpu-int4pack" if bits == 4 else "cpu-int8pack")
        assert y.dtype == dtype
        ref = qmatmul_ref(x.float(), pack(q, bits), scales, zeros, bits=bits, group_size=g, in_features=k,
                          perm=perm, bias=bias)
        assert sqnr_db(y, ref) > 40
    # the native layout replaced the canonical one: no second copy of the weight
    assert mod.qweight.numel() * mod.qweight.element_size() == canonical_bytes
    sd = mod.state_dict()
    assert torch.equal(sd["qweight"], pack(q, bits)) and "native_scale" not in sd
    rebuilt = QuantLinear.empty(**mod.metadata(), dtype=torch.float32)
    rebuilt.load_state_dict(sd)
    torch.testing.assert_close(rebuilt(x), y)
    # loading into a module already in native layout, and moving it, go back through the canonical layout
    mod.load_state_dict(sd)
    assert torch.equal(mod.state_dict()["qweight"], pack(q, bits))
    mod.to(torch.float32)
    assert mod.native is None and torch.equal(mod.qweight, pack(q, bits))


def test_unsupported_group_falls_back_to_reference():
    q, scales, zeros, _ = _quantized(32, 128, 4, 16, seed=3)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=4, group_size=16)
    mod(torch.randn(1, 128))
    assert mod.kernel_path == "reference"


def test_int8_per_channel_with_k_not_a_multiple_of_16_takes_the_reference_path():
    """_weight_int8pack_mm segfaults when K % 16 != 0 (torch 2.13): such layers must never reach it."""
    q, scales, zeros, _ = _quantized(32, 40, 8, 40, seed=5)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=8, group_size=40)
    x = torch.randn(2, 40)
    y = mod(x)
    assert mod.kernel_path == "reference"
    ref = qmatmul_ref(x, pack(q, 8), scales, zeros, bits=8, group_size=40, in_features=40)
    torch.testing.assert_close(y, ref)


@needs_int4
@pytest.mark.parametrize("bits,g", [(4, 128), (8, 256)])
def test_a_state_dict_taken_before_the_first_forward_keeps_canonical_weights(bits, g):
    q, scales, zeros, _ = _quantized(64, 256, bits, g, seed=11)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g)
    early = mod.state_dict()  # shares storage with the module's buffers
    mod(torch.randn(1, 256))  # adopts the native layout
    assert mod.kernel_path in ("cpu-int4pack", "cpu-int8pack")
    assert torch.equal(early["qweight"], pack(q, bits))


@needs_int4
@pytest.mark.parametrize("bits,g", [(4, 128), (8, 256)])
@pytest.mark.parametrize("layout", ["column slice", "every other column", "transposed"])
def test_native_paths_accept_non_contiguous_inputs(bits, g, layout):
    q, scales, zeros, _ = _quantized(64, 256, bits, g, seed=13)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 512, generator=gen)
    x = {"column slice": base[:, :256], "every other column": base[:, ::2],
         "transposed": torch.randn(256, 4, generator=gen).t()}[layout]
    assert not x.is_contiguous()
    y = mod(x)
    assert mod.kernel_path in ("cpu-int4pack", "cpu-int8pack")
    # int8's fp32 zero term sums x in memory order: a strided sum rounds differently in the last bits
    torch.testing.assert_close(y, mod(x.contiguous()), rtol=1e-4, atol=1e-4)


def test_casting_a_model_keeps_the_packed_formats_dtypes():
    """model.to(bfloat16) must not cast fp16 scales/zeros, fp32 per-channel scales or FP8 weights."""
    from kernels.modules import FP8Linear, Int8DynamicLinear

    q, scales, zeros, _ = _quantized(32, 128, 4, 64, seed=7)  # fractional zeros, as HQQ stores them
    ql = QuantLinear.from_quantized(q, scales, zeros, bits=4, group_size=64, bias=torch.randn(32))
    w = torch.randn(32, 128)
    s = w.abs().amax(dim=1) / 127
    i8 = Int8DynamicLinear.from_quantized(torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8), s)
    f8 = FP8Linear.from_quantized((w / s[:, None] / 4).clamp(-448, 448).to(torch.float8_e4m3fn), s * 4)
    x = torch.randn(2, 128)
    before = [m(x) for m in (ql, i8, f8)]
    for m in (ql, i8, f8):
        m.to(torch.bfloat16)
    assert ql.scales.dtype == ql.zeros.dtype == torch.float16 and torch.equal(ql.zeros, zeros)
    assert ql.bias.dtype == torch.bfloat16  # the bias follows the model like any parameter
    assert i8.weight.dtype == torch.int8 and i8.weight_scale.dtype == torch.float32
    assert f8.weight.dtype == torch.float8_e4m3fn and f8.weight_scale.dtype == torch.float32
    for m, y in zip((ql, i8, f8), before, strict=True):
        assert sqnr_db(m(x.bfloat16()).float(), y) > 30  # bf16 activations only
