"""Quantization methods of compressor/engine/methods/{hqq,awq,smoothquant,fp8,bnb}.py, on CPU, tiny shapes.

Quality is asserted as SQNR in dB of a layer's output against the fp32 layer. Thresholds (measured
values in brackets, gaussian weights, K=256):
    HQQ 4-bit g64 > 15 dB [21.4] and >= RTN at the same bits/group; 3-bit g64 > 10 [14.7]
    AWQ 4-bit g128 on outlier activations >= RTN + 1 dB [24.8 vs 20.2]
    SmoothQuant W8A8 alpha 0.5 on outlier activations > 35 dB [41.8], and above alpha 0 [30.8]
    FP8 E4M3 per channel > 25 dB; bitsandbytes NF4/FP4 > 15 dB [20.7/19.5]; LLM.int8 > 35 dB [48]
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor.engine.methods.awq import (
    AWQConfig,
    apply_clip,
    awq_search_clip,
    awq_search_scale,
    fold_scale,
    foldable_groups,
)
from compressor.engine.methods.bnb import FP4Config, LLMInt8Config, NF4Config, bnb_linear4bit, bnb_linear8bit
from compressor.engine.methods.fp8 import FP8Config, quantize_fp8_e4m3
from compressor.engine.methods.hqq import HQQConfig, hqq_quantize
from compressor.engine.methods.smoothquant import (
    SmoothQuantConfig,
    quantize_int8_per_channel,
    smoothing_factors,
)
from compressor.engine.quant import dequantize, fake_quant, pack_linear, sqnr_db
from compressor.errors import RecipeError
from kernels.reference import int8_dynamic_matmul_ref
from tests.helpers import tiny_llama


def _gauss(*shape: int, seed: int = 0, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std


def _outlier_acts(T: int = 1024, K: int = 256, n_out: int = 4, gain: float = 30.0) -> torch.Tensor:
    """Activations [T, K] whose first n_out channels are `gain` times larger, as in LLMs."""
    X = _gauss(T, K, seed=1)
    X[:, :n_out] *= gain
    return X


# --- HQQ ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,group_size,min_db", [(4, 64, 15.0), (3, 64, 10.0), (2, 32, 5.0), (8, 128, 40.0)])
def test_hqq_beats_rtn(bits, group_size, min_db):
    W, X = _gauss(128, 256, std=0.02), _gauss(64, 256, seed=1)
    q, scales, zeros = hqq_quantize(W, bits, group_size)
    assert q.dtype == torch.uint8 and int(q.max()) <= 2**bits - 1
    assert scales.shape == zeros.shape == (128, 256 // group_size)
    hqq = sqnr_db(X @ W.T, X @ dequantize(q, scales.half(), zeros.half()).T)
    rtn = sqnr_db(X @ W.T, X @ fake_quant(W, bits, group_size).T)
    assert hqq > min_db
    assert hqq >= rtn


def test_hqq_fractional_zeros_survive_packing():
    W, X = _gauss(128, 256, std=0.02), _gauss(8, 256, seed=1)
    q, scales, zeros = hqq_quantize(W, 4, 64)
    assert (zeros != zeros.round()).any()  # HQQ's zeros are not integers
    module = pack_linear(q, scales, zeros, bits=4, group_size=64)
    ref = X @ dequantize(q, scales.half(), zeros.half()).T
    torch.testing.assert_close(module(X.half()).float(), ref, atol=2e-2, rtol=1e-2)


# --- AWQ ---------------------------------------------------------------------------------------------

def test_awq_beats_rtn_on_outlier_activations():
    X = _outlier_acts()
    weights = [_gauss(128, 256, seed=2, std=0.05), _gauss(256, 256, seed=3, std=0.05)]
    W = torch.cat(weights)
    rtn = lambda w: fake_quant(w, 4, 128)  # noqa: E731
    s, alpha, losses = awq_search_scale(X, weights, [rtn, rtn], n_grid=20)
    assert alpha > 0 and min(losses) < losses[0]  # losses[0] is alpha = 0, plain RTN
    awq_db = sqnr_db(X @ W.T, (X / s) @ rtn(W * s).T)
    rtn_db = sqnr_db(X @ W.T, X @ rtn(W).T)
    assert awq_db >= rtn_db + 1.0
    max_val = awq_search_clip(W * s, X / s, rtn, 128, n_grid=10)
    clip_db = sqnr_db(X @ W.T, (X / s) @ rtn(apply_clip(W * s, max_val)).T)
    assert clip_db >= awq_db - 0.2  # per-group choices include "no clip"; cross-group terms may cost a little


def test_awq_fold_is_exact_on_a_llama_layer():
    model = tiny_llama(layers=1)
    layer = model.model.layers[0]
    with torch.no_grad():
        for p in layer.parameters():  # non-trivial norm weights, so folding is really exercised
            p.add_(_gauss(*p.shape, seed=5, std=0.01))
    ids = torch.randint(1, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
        groups = foldable_groups(layer)
        assert [n for _, n in groups] == [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                          ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
        for i, (prev, names) in enumerate(groups):
            K = layer.get_submodule(names[0]).in_features
            fold_scale(prev, [layer.get_submodule(n) for n in names], _gauss(K, seed=10 + i).abs() + 0.5)
        out = model(ids).logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_awq_skips_vo_fold_under_grouped_query_attention():
    layer = tiny_llama(layers=1, heads=4, kv_heads=2).model.layers[0]
    assert ["self_attn.o_proj"] not in [n for _, n in foldable_groups(layer)]


# --- SmoothQuant ---------------------------------------------------------------------------------------

def test_smoothquant_reduces_w8a8_error_on_outliers():
    X = _outlier_acts()
    W = _gauss(256, 256, seed=2, std=0.05)
    Y = X @ W.T

    def w8a8_db(alpha: float | None) -> float:
        s = torch.ones(256) if alpha is None else smoothing_factors(X.abs().amax(0), [W], alpha)
        q, scale = quantize_int8_per_channel(W * s)
        return sqnr_db(Y, int8_dynamic_matmul_ref(X / s, q, scale))

    assert w8a8_db(0.5) > 35.0
    assert w8a8_db(0.5) > w8a8_db(0.0) + 3.0
    assert w8a8_db(0.5) > w8a8_db(None) + 3.0


# --- FP8 and bitsandbytes --------------------------------------------------------------------------------

def test_fp8_e4m3_per_channel():
    W, X = _gauss(96, 256, std=0.02), _gauss(16, 256, seed=1)
    W[0] *= 100  # one loud row must not cost the others their precision (per-channel scales)
    weight, scale = quantize_fp8_e4m3(W)
    assert weight.dtype == torch.float8_e4m3fn and scale.shape == (96,)
    assert sqnr_db(X @ W[1:].T, X @ (weight.float() * scale[:, None])[1:].T) > 25.0


@pytest.mark.parametrize("quant_type,double_quant", [("nf4", False), ("nf4", True), ("fp4", False)])
def test_bnb_4bit(quant_type, double_quant):
    lin = nn.Linear(256, 96)  # out_features not a multiple of 32: the avx512-bf16 repack is avoided
    X = _gauss(8, 256, seed=1)
    module = bnb_linear4bit(lin, quant_type, double_quant)
    with torch.no_grad():
        assert sqnr_db(lin(X), module(X)) > 15.0
    assert module.weight.dtype == torch.uint8


def test_bnb_llm_int8():
    lin = nn.Linear(256, 96)
    X = _gauss(8, 256, seed=1)
    module = bnb_linear8bit(lin)
    assert module.weight.dtype == torch.int8
    with torch.no_grad():
        assert sqnr_db(lin(X), module(X)) > 35.0


# --- configs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kwargs,field", [
    (HQQConfig, {"bits": 5}, "bits"),
    (HQQConfig, {"symmetric": True}, "symmetric"),
    (HQQConfig, {"lp_norm": 1.5}, "lp_norm"),
    (HQQConfig, {"iters": 0}, "iters"),
    (AWQConfig, {"n_grid": 0}, "n_grid"),
    (AWQConfig, {"max_shrink": 1.0}, "max_shrink"),
    (AWQConfig, {"group_size": 0}, "group_size"),
    (SmoothQuantConfig, {"alpha": 1.5}, "alpha"),
    (SmoothQuantConfig, {"alpha": "high"}, "alpha"),
    (NF4Config, {"blocksize": 100}, "blocksize"),
    (FP4Config, {"compute_dtype": "int8"}, "compute_dtype"),
    (LLMInt8Config, {"threshold": -1}, "threshold"),
    (FP8Config, {"targets": "("}, "targets"),
])
def test_bad_config_raises_recipe_error(cls, kwargs, field):
    with pytest.raises(RecipeError) as e:
        cls(**kwargs)
    assert e.value.field == field and str(kwargs[field]) in str(e.value)


# --- end to end through compress() ------------------------------------------------------------------------
# Logit SQNR of the tiny random Llama vs its fp32 self (measured: hqq 17.3, awq 16.0, smoothquant 36.5,
# fp8 27.5, bnb-nf4 16.7, bnb-fp4 13.5, llm-int8 36.9; rtn w4 g128 15.6 for comparison).

@pytest.mark.parametrize("stage,module_type,min_db", [
    ({"method": "hqq", "bits": 4, "group_size": 64}, "QuantLinear", 12.0),
    ({"method": "awq", "bits": 4, "group_size": 128, "n_grid": 10}, "QuantLinear", 12.0),
    ({"method": "smoothquant", "alpha": 0.5}, "Int8DynamicLinear", 28.0),
    ({"method": "fp8"}, "FP8Linear", 20.0),
    ({"method": "bnb-nf4", "double_quant": True}, "Linear4bit", 12.0),
    ({"method": "bnb-fp4"}, "Linear4bit", 10.0),
    ({"method": "llm-int8"}, "Linear8bitLt", 28.0),
])
def test_compress_end_to_end(stage, module_type, min_db):
    from compressor.engine.compress import compress
    from tests.helpers import random_tokens

    model = tiny_llama()
    ids = random_tokens(2, 32, seed=3)
    with torch.no_grad():
        ref = model(ids).logits
    model, report = compress(model, stage, calibration=random_tokens(4, 64, seed=1))
    with torch.no_grad():
        out = model(ids).logits
    assert sqnr_db(ref, out) > min_db
    assert type(model.model.layers[1].mlp.down_proj).__name__ == module_type
    assert type(model.lm_head) is nn.Linear  # kept by default
    assert report.weight_bytes_after < report.weight_bytes_before
    assert all(r.sqnr_db is not None for r in report.layers)


def test_awq_override_skips_a_group_member_exactly():
    """q_proj stays fp32 while k/v share its folded norm: its weights absorb s, the layer stays exact."""
    from compressor.engine.compress import compress
    from tests.helpers import random_tokens

    stage = {"method": "awq", "bits": 8, "group_size": 128, "n_grid": 5, "clip": False,
             "overrides": [{"pattern": r"q_proj$", "skip": True}, {"pattern": r"down_proj$", "bits": 4}]}
    model = tiny_llama(layers=1)
    ids = random_tokens(2, 32, seed=3)
    with torch.no_grad():
        ref = model(ids).logits
    model, _ = compress(model, stage, calibration=random_tokens(4, 64, seed=1))
    layer = model.model.layers[0]
    assert type(layer.self_attn.q_proj) is nn.Linear
    assert layer.mlp.down_proj.bits == 4 and layer.mlp.up_proj.bits == 8
    with torch.no_grad():
        assert sqnr_db(ref, model(ids).logits) > 20.0


def test_awq_reports_the_sqnr_of_layers_whose_outputs_carry_the_next_groups_scale():
    """v_proj and up_proj feed o_proj / down_proj, so AWQ divides their rows by that group's scale;
    their SQNR must be measured against the scaled original (8-bit: every layer near 43 dB)."""
    from compressor import compress
    from tests.helpers import random_tokens, tiny_llama

    torch.manual_seed(0)
    model = tiny_llama(layers=1)
    with torch.no_grad():  # outlier channels into o_proj / down_proj, so their groups get real scales
        model.model.layers[0].self_attn.v_proj.weight[:4] *= 20
        model.model.layers[0].mlp.up_proj.weight[:4] *= 20
    _, report = compress(model, {"method": "awq", "bits": 8, "group_size": 128, "clip": False},
                         calibration=random_tokens(4, 64, seed=1))
    sqnr = {r.name.rsplit(".", 1)[-1]: r.sqnr_db for r in report.layers}
    assert min(sqnr.values()) > 35, sqnr


def test_hqq_keeps_a_constant_group_far_from_zero_finite():
    """Its min-max step would be tiny and its zero beyond fp16 (stored as inf): the range includes 0 instead."""
    W = torch.randn(32, 128, generator=torch.Generator().manual_seed(0)) * 0.02
    W[0, :64] = 4.0
    q, scales, zeros = hqq_quantize(W, 4, 64)
    assert torch.isfinite(zeros.half()).all()
    W_hat = (q.float().reshape(32, 2, 64) - zeros.half().float()[..., None]) * scales.half().float()[..., None]
    assert torch.allclose(W_hat.reshape(32, 128)[0, :64], torch.full((64,), 4.0), atol=0.3)
    ordinary, _, _ = hqq_quantize(W[1:], 4, 64)  # other groups are untouched by the fallback
    assert torch.equal(q[1:], ordinary)
