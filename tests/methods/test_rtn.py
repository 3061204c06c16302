"""RTN and the shared quantization functions: format, packed-layer quality, measured bytes."""

import pytest
import torch

from compressor import compress
from compressor.engine.quant import dequantize, fake_quant, pack_linear, qparams, quantize, sqnr_db
from compressor.engine.report import state_dict_bytes
from tests.helpers import tiny_llama

# Output SQNR (dB) of a packed RTN layer on random inputs, per bit width: about 6 dB per bit,
# measured 4.6-7.8 (2), 12.0-15.5 (3), 18.5-21.9 (4), 42-47 (8) on Gaussian weights.
RTN_MIN_SQNR = {2: 4.0, 3: 11.0, 4: 17.0, 8: 40.0}


def _weights(n=256, k=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.02


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [-1, 32, 128])
def test_rtn_packed_layer_sqnr(bits, symmetric, group_size):
    W = _weights()
    G = W.shape[1] if group_size == -1 else group_size
    q, scales, zeros = quantize(W, bits, G, symmetric)
    assert q.dtype == torch.uint8 and int(q.max()) <= 2**bits - 1
    assert scales.shape == zeros.shape == (256, 256 // G) and scales.dtype == torch.float16
    if symmetric:
        assert torch.all(zeros == 2 ** (bits - 1))
    layer = pack_linear(q, scales, zeros, bits=bits, group_size=G)
    x = torch.randn(64, 256)
    # The packed module computes the dequantized weight W = (q - z) * s per group (CPU kernels take
    # bf16 activations, hence a SQNR rather than exact equality).
    assert sqnr_db(x @ dequantize(q, scales, zeros).T, layer(x)) > 35
    assert sqnr_db(x @ W.T, layer(x)) > RTN_MIN_SQNR[bits]


def test_qparams_follow_gptq_conventions():
    w = torch.tensor([[0.5, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    scale, zero = qparams(w, 4, symmetric=False)
    # The range always includes 0, and an all-zero group gets [-1, 1].
    assert scale[0, 0].item() == pytest.approx(3.0 / 15, rel=1e-3) and zero[0, 0].item() == 0
    assert scale[1, 0].item() == pytest.approx(2.0 / 15, rel=1e-3)
    assert torch.equal(fake_quant(torch.zeros(4, 8), 4, 8), torch.zeros(4, 8))


def test_more_bits_less_error():
    W = _weights()
    errs = [sqnr_db(W, fake_quant(W, b, 128)) for b in (2, 3, 4, 8)]
    assert errs == sorted(errs)


def test_w4_g128_model_linears_hold_at_most_027x_fp16_bytes():
    model = tiny_llama()
    fp16_bytes = {n: m.weight.numel() * 2 for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    model, report = compress(model, "w4-g128")
    packed = {n: state_dict_bytes(model.get_submodule(n)) for n in fp16_bytes}
    ratio = sum(packed.values()) / sum(fp16_bytes.values())
    assert ratio <= 0.27, ratio
    assert report.effective_bits == pytest.approx(4.25, abs=0.01)  # 4 bits + fp16 scale and zero per 128
    assert report.sanity["finite_logits"]
