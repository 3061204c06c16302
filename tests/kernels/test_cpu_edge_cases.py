"""CPU kernel paths at the edges the first version got wrong (issue 20), each test failing before its fix.

- asymmetric per-channel int8: aten's int8pack rounds sum x * (q - 128) * s to bf16 before the zero
  correction is added, so rows whose zero is far from 128 lost up to 20 dB (50 dB with non-centred x);
- zero-row inputs [0, K] crashed both native paths, and pack/unpack crashed on zero-row weights;
- an inf input came back NaN on the int8 path where the reference gives +-inf.
"""

from __future__ import annotations

import pytest
import torch

from kernels.modules import QuantLinear
from kernels.pack import pack, packed_cols, unpack
from kernels.reference import qmatmul_ref
from tests.kernels.test_pack_reference import _quantized, sqnr_db


def _rtn_per_channel_asym(w: torch.Tensor, bits: int = 8):
    """Min-max asymmetric RTN with integer zeros, one group per row (as compressor's rtn stores it)."""
    maxq = 2**bits - 1
    lo, hi = w.amin(1, keepdim=True).clamp(max=0), w.amax(1, keepdim=True).clamp(min=0)
    s = ((hi - lo) / maxq).half().float()
    z = torch.round(-lo / s).clamp(0, maxq)
    q = torch.clamp(torch.round(w / s) + z, 0, maxq).to(torch.uint8)
    return q, s.half(), z.half()


@pytest.mark.parametrize("activations", ["centred", "non-centred"])
def test_asymmetric_int8_keeps_the_references_precision_with_zeros_far_from_128(activations):
    gen = torch.Generator().manual_seed(0)
    n, k = 64, 256
    w = torch.randn(n, k, generator=gen).abs() * torch.logspace(-2, 0, n)[:, None]
    w[n // 2:] *= -1  # half the rows all positive (zero 0), half all negative (zero 255)
    q, s, z = _rtn_per_channel_asym(w)
    assert float((z.float() - 128).abs().min()) >= 127  # every zero as far from 128 as it gets (0 or 255)
    mod = QuantLinear.from_quantized(q, s, z, bits=8, group_size=k)
    x = torch.randn(4, k, generator=gen) + (3.0 if activations == "non-centred" else 0.0)
    y = mod(x)
    assert mod.kernel_path == "cpu-int8pack"
    ref = qmatmul_ref(x, pack(q, 8), s, z, bits=8, group_size=k, in_features=k)
    for row in range(x.shape[0]):
        assert sqnr_db(y[row], ref[row]) > 40, row


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(0, 24), (2, 0, 24), (0, 0)])
def test_pack_and_unpack_zero_row_weights(bits, shape):
    q = torch.zeros(shape, dtype=torch.uint8)
    packed = pack(q, bits)
    assert packed.shape == (*shape[:-1], packed_cols(shape[-1], bits))
    assert torch.equal(unpack(packed, bits, shape[-1]), q)


# (bits, group size): int4pack, 2/3-bit, int8pack, and layers no native kernel takes
_LAYOUTS = [(4, 128), (3, 64), (2, 32), (8, 256), (4, 16), (8, 64)]


@pytest.mark.parametrize("bits,g", _LAYOUTS)
@pytest.mark.parametrize("lead", [(0,), (2, 0), (0, 3)])
def test_zero_row_inputs(bits, g, lead):
    q, scales, zeros, _ = _quantized(64, 256, bits, g, seed=bits + g)
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g, bias=torch.randn(64))
    mod(torch.randn(1, 256))  # the runtime layout is in place before the empty input arrives
    y = mod(torch.randn(*lead, 256))
    assert y.shape == (*lead, 64) and y.dtype == torch.float32


@pytest.mark.parametrize("bits,g", [(4, 128), (8, 256)])
def test_a_layer_with_no_output_features(bits, g):
    mod = QuantLinear.from_quantized(torch.zeros(0, 256, dtype=torch.uint8), torch.ones(0, 256 // g).half(),
                                     torch.zeros(0, 256 // g).half(), bits=bits, group_size=g)
    assert mod(torch.randn(3, 256)).shape == (3, 0)


@pytest.mark.parametrize("bits,g,zeros_kind", [(8, 256, "symmetric"), (8, 256, "integer"), (8, 256, "fractional"),
                                               (4, 128, "integer"), (3, 64, "integer"), (8, 64, "integer")])
@pytest.mark.parametrize("m", [3, 64])
def test_inf_inputs_give_the_references_infinities(bits, g, zeros_kind, m):
    q, scales, zeros, _ = _quantized(64, 256, bits, g, seed=17)
    if zeros_kind == "symmetric":
        zeros = torch.full_like(zeros, 2 ** (bits - 1))
    elif zeros_kind == "integer":
        zeros = zeros.round()
    mod = QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=g)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, 256, generator=gen)
    x[0, 3], x[1, 7] = float("inf"), -float("inf")
    y = mod(x)
    ref = qmatmul_ref(x, pack(q, bits), scales, zeros, bits=bits, group_size=g, in_features=256)
    inf = ref.isinf()
    assert inf.any()
    assert torch.equal(y[inf], ref[inf])  # the same signed infinities
    assert torch.equal(~y.isfinite(), ~ref.isfinite())  # non-finite exactly where the reference is
    assert sqnr_db(y[2:], ref[2:]) > 40  # rows without an inf keep their precision
