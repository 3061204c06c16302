"""The CPU plan: every bit width on a native kernel, the switch to dequantize + dense bf16 by M, honest bytes.

Tolerance as in test_cpu_native.py: bf16 activations, scales and (dense path) weights against the fp32
reference, SQNR > 40 dB.
"""

from __future__ import annotations

import pytest
import torch

from kernels import cpu_native
from kernels.cpu_plan import DENSE_FROM
from kernels.modules import QuantLinear
from kernels.pack import pack
from kernels.reference import dequantize, qmatmul_ref
from tests.kernels.test_pack_reference import _quantized, sqnr_db

needs_int4 = pytest.mark.skipif(not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"),
                                reason="this torch has no _weight_int4pack_mm_for_cpu")
INT4, INT8, DENSE = cpu_native.INT4PACK, cpu_native.INT8PACK, cpu_native.DEQUANT_BF16


def _module(bits, g, n=64, k=256, seed=0, act_order=False, bias=False):
    q, scales, zeros, perm = _quantized(n, k, bits, g, seed=seed, act_order=act_order)
    b = torch.randn(n) if bias else None
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g, perm=perm, bias=b)
    return mod, (pack(q, bits), scales, zeros, perm, b)


def _ref(x, bits, g, k, packed, scales, zeros, perm, bias):
    return qmatmul_ref(x, packed, scales, zeros, bits=bits, group_size=g, in_features=k, perm=perm, bias=bias)


@needs_int4
@pytest.mark.parametrize("bits,g,act_order", [(2, 32, False), (2, 256, True), (3, 64, False), (3, 128, True),
                                              (3, 96, False), (4, 512, False)])
def test_every_bit_width_takes_the_int4_kernel_and_stays_exact_enough(bits, g, act_order):
    k = 512 if g == 512 else 384 if g == 96 else 256
    mod, (packed, scales, zeros, perm, b) = _module(bits, g, k=k, seed=bits * g, act_order=act_order, bias=True)
    for m in (1, 5):
        x = torch.randn(2, m, k)
        y = mod(x)
        assert mod.kernel_path == INT4 and y.shape == (2, m, 64)
        assert sqnr_db(y, _ref(x, bits, g, k, packed, scales, zeros, perm, b)) > 40


@needs_int4
@pytest.mark.parametrize("bits", [2, 3])
def test_low_bit_runtime_layout_is_held_beside_the_canonical_bytes(bits):
    mod, (packed, *_) = _module(bits, 64, seed=bits)
    stored = sum(t.numel() * t.element_size() for t in mod.state_dict().values())
    mod(torch.randn(1, 256))
    held = sum(t.numel() * t.element_size() for t in mod.buffers())
    assert torch.equal(mod.qweight, packed)  # canonical bytes stay: the state dict and a GPU need them
    assert mod.native_qweight.shape == (64, 128)  # the int4 layout: K / 2 bytes a row
    assert "native_qweight" not in mod.state_dict() and torch.equal(mod.state_dict()["qweight"], packed)
    assert held > stored + mod.native_qweight.numel()  # what is held, scales of the native layout included
    mod.to(torch.float32)  # moving drops the runtime layout
    assert not hasattr(mod, "native_qweight") and mod.native is None


@needs_int4
@pytest.mark.parametrize("bits,g,zeros_kind", [(4, 128, "fractional"), (3, 64, "fractional"), (2, 32, "fractional"),
                                               (8, 256, "symmetric"), (8, 256, "fractional")])
def test_from_dense_from_rows_on_the_weight_is_dequantized_to_bf16_once_per_call(bits, g, zeros_kind):
    mod, (packed, scales, zeros, perm, b) = _module(bits, g, n=128, seed=g + bits, act_order=True, bias=True)
    if zeros_kind == "symmetric":
        zeros = torch.full_like(zeros, 2 ** (bits - 1))
        mod.zeros.copy_(zeros)
    kind = INT8 if bits == 8 else INT4
    held = []
    for m in (DENSE_FROM[kind] - 1, DENSE_FROM[kind], 3 * DENSE_FROM[kind]):
        x = torch.randn(m, 256)
        y = mod(x)
        assert mod.kernel_path == (kind if m < DENSE_FROM[kind] else DENSE)
        assert sqnr_db(y, _ref(x, bits, g, 256, packed, scales, zeros, perm, b)) > 40
        held.append(sum(t.numel() * t.element_size() for t in mod.buffers()))
    assert held[0] == held[1] == held[2]  # the bf16 weight is not kept


@needs_int4
@pytest.mark.parametrize("bits,n,g", [(4, 128, 64), (3, 64, 128), (2, 192, 32)])
def test_int4pack_dequantized_transpose_matches_the_reference(bits, n, g):
    q, scales, zeros, _ = _quantized(n, 256, bits, g, seed=n + g)
    native, nw = cpu_native.to_int4pack(pack(q, bits), scales, zeros, group_size=g, in_features=256, bits=bits)
    wt = cpu_native.int4pack_dequant_t(native, nw, 256)
    assert wt.shape == (256, n) and wt.dtype == torch.bfloat16
    ref = dequantize(pack(q, bits), scales, zeros, bits=bits, group_size=g, in_features=256)
    assert sqnr_db(wt.T, ref) > 45


@needs_int4
def test_rows_not_a_multiple_of_64_keep_the_kernel_at_every_m():
    mod, (packed, scales, zeros, perm, b) = _module(4, 64, n=96, seed=5)  # blocks of 64 + 32 rows
    x = torch.randn(2 * DENSE_FROM[INT4], 256)
    y = mod(x)
    assert mod.kernel_path == INT4
    assert sqnr_db(y, _ref(x, 4, 64, 256, packed, scales, zeros, perm, b)) > 40


def test_layers_without_a_native_kernel_keep_fp32_reference_math_at_every_m():
    """Grouped 8-bit: a bf16 weight would add noise as large as its quantization noise."""
    mod, (packed, scales, zeros, perm, b) = _module(8, 64, seed=9)
    for m in (1, 256):
        x = torch.randn(m, 256)
        y = mod(x)
        assert mod.kernel_path == "reference"
        torch.testing.assert_close(y, _ref(x, 8, 64, 256, packed, scales, zeros, perm, b))


@pytest.mark.parametrize("bits,g", [(4, 64), (3, 64), (8, 256), (4, 16)])
def test_a_module_with_its_runtime_layout_copies_and_pickles(bits, g):
    import copy
    import io

    mod, _ = _module(bits, g, seed=bits, act_order=True)
    x = torch.randn(3, 256)
    y = mod(x)
    buf = io.BytesIO()
    torch.save(mod, buf)  # the plan holds an aten op handle, which does not pickle by itself
    buf.seek(0)
    for other in (copy.deepcopy(mod), torch.load(buf, weights_only=False)):
        assert torch.equal(other(x), y) and other.kernel_path == mod.kernel_path
        assert other._run.weight.data_ptr() != mod._run.weight.data_ptr()  # its own tensors, not the original's


@pytest.mark.parametrize("kind,n,k,expected", [(INT4, 1536, 576, DENSE_FROM[INT4]), (INT4, 4096, 4096, 192),
                                               (INT4, 96, 256, 1 << 62), (INT8, 4096, 4096, DENSE_FROM[INT8]),
                                               ("reference", 64, 64, 1 << 62)])
def test_dense_from_by_kind_and_size(kind, n, k, expected):
    from kernels.cpu_plan import REFERENCE, dense_from

    assert dense_from({"reference": REFERENCE}.get(kind, kind), n, k) == expected
