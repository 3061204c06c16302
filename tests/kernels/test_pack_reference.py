"""Packing round trips (exact), the reference against a float dequant-matmul, and module state dicts."""

import pytest
import torch

from kernels.modules import Int8DynamicLinear, QuantLinear
from kernels.pack import pack, pack_3bit_u8, packed_cols, unpack
from kernels.reference import dequantize, qmatmul_ref


def sqnr_db(y, ref):
    return float(10 * torch.log10(ref.float().pow(2).mean() / (y.float() - ref.float()).pow(2).mean()))


def _random_q(n, k, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**bits, (n, k), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k", [8, 24, 64, 13, 1])
def test_pack_round_trip_exact(bits, k):
    q = _random_q(5, k, bits, seed=bits * 100 + k)
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (5, packed_cols(k, bits))
    assert torch.equal(unpack(packed, bits, k), q)


def test_3bit_is_three_bits_per_value():
    q = torch.arange(8, dtype=torch.uint8).reshape(1, 8)  # v_i = i
    packed = pack_3bit_u8(q)
    assert packed.shape == (1, 3)
    word = sum(int(b) << (8 * i) for i, b in enumerate(packed[0]))
    assert word == sum(i << (3 * i) for i in range(8))


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        pack(torch.tensor([[16]], dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="bits=5"):
        pack(torch.zeros(1, 8, dtype=torch.uint8), 5)


def _quantized(n, k, bits, g, seed, act_order=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 2**bits, (n, k), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(n, k // g, generator=gen) * 0.02 + 0.005).half()
    zeros = (torch.rand(n, k // g, generator=gen) * (2**bits - 1)).half()  # fractional zeros (HQQ style)
    perm = torch.randperm(k, generator=gen).to(torch.int32) if act_order else None
    return q, scales, zeros, perm


@pytest.mark.parametrize("bits,g,act_order", [(2, 16, False), (3, 32, True), (4, 64, False), (4, 128, True),
                                              (8, 128, False)])
def test_reference_matches_float_dequant_matmul(bits, g, act_order):
    n, k = 48, 128
    q, scales, zeros, perm = _quantized(n, k, bits, g, seed=bits + g, act_order=act_order)
    packed = pack(q, bits)
    w = ((q.float().reshape(n, -1, g) - zeros.float()[..., None]) * scales.float()[..., None]).reshape(n, k)
    assert torch.equal(dequantize(packed, scales, zeros, bits=bits, group_size=g, in_features=k), w)
    x = torch.randn(3, 5, k)
    xp = x[..., perm.long()] if act_order else x
    bias = torch.randn(n)
    y = qmatmul_ref(x, packed, scales, zeros, bits=bits, group_size=g, in_features=k, perm=perm, bias=bias)
    torch.testing.assert_close(y, xp @ w.T + bias, rtol=1e-5, atol=1e-5)


def test_reference_rejects_bad_group_size():
    q, scales, zeros, _ = _quantized(4, 128, 4, 128, seed=0)
    with pytest.raises(ValueError, match="group_size=48"):
        qmatmul_ref(torch.randn(1, 128), pack(q, 4), scales, zeros, bits=4, group_size=48, in_features=128)


@pytest.mark.parametrize("bits,g,act_order,bias", [(4, 32, True, True), (3, 128, False, False)])
def test_quantlinear_state_dict_round_trip(bits, g, act_order, bias):
    n, k = 32, 128
    q, scales, zeros, perm = _quantized(n, k, bits, g, seed=7, act_order=act_order)
    b = torch.randn(n) if bias else None
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g, bias=b, perm=perm)
    x = torch.randn(2, k)
    y = mod(x)
    assert mod.kernel_path in ("reference", "cpu-int4pack")
    ref = qmatmul_ref(x, pack(q, bits), scales, zeros, bits=bits, group_size=g, in_features=k, perm=perm, bias=b)
    assert sqnr_db(y, ref) > 40  # cpu-int4pack computes with bf16 activations

    sd = mod.state_dict()
    assert set(sd) == {"qweight", "scales", "zeros"} | ({"perm"} if act_order else set()) | ({"bias"} if bias else set())
    assert torch.equal(sd["qweight"], pack(q, bits))
    rebuilt = QuantLinear.empty(**mod.metadata(), dtype=torch.float32)
    rebuilt.load_state_dict(sd)
    torch.testing.assert_close(rebuilt(x), y, rtol=0, atol=0)


def test_int8_dynamic_linear_matches_float():
    torch.manual_seed(0)
    n, k = 64, 128
    w = torch.randn(n, k)
    w_scale = w.abs().amax(dim=1) / 127
    wq = torch.round(w / w_scale[:, None]).clamp(-127, 127).to(torch.int8)
    mod = Int8DynamicLinear.from_quantized(wq, w_scale, bias=torch.randn(n))
    x = torch.randn(3, k)
    y = mod(x)
    assert mod.kernel_path == "cpu-int-mm"
    ref = x @ (wq.float() * w_scale[:, None]).T + mod.bias
    assert sqnr_db(y, ref) > 30
    rebuilt = Int8DynamicLinear.empty(**mod.metadata(), dtype=torch.float32)
    rebuilt.load_state_dict(mod.state_dict())
    assert torch.equal(rebuilt(x), y)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("value", [0.0, 3.7, -250.0, 1e-9])
def test_kv_quantize_constant_groups_stay_finite(bits, value):
    # A group with no range must not give a 0 fp16 scale (and a NaN or inf zero).
    from kernels.kv import dequantize_kv_ref, quantize_kv_ref

    x = torch.full((2, 3, 64), value)
    x[1, 2, :] = torch.linspace(-1, 1, 64)  # an ordinary group beside the constant ones
    packed, scales, zeros = quantize_kv_ref(x, bits, 32, axis=-1)
    assert torch.isfinite(scales.float()).all() and (scales.float() > 0).all() and torch.isfinite(zeros.float()).all()
    back = dequantize_kv_ref(packed, scales, zeros, bits=bits, group_size=32, axis=-1, length=64)
    const = back[:1]
    assert torch.allclose(const, torch.full_like(const, value), atol=1e-3 * max(1.0, abs(value)))
