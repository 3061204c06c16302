"""Quantization invariants the end-to-end SQNR checks in test_methods.py cannot see.

Each test pins one part of an algorithm against its formula, computed here independently, or against
the method's own starting point: SmoothQuant's factors for any alpha, AWQ's centred mean|X| scales
and its clipping, HQQ's zero optimisation and lp shrinkage, asymmetric zeros rounded to nearest,
GPTQ's damping, and FP8's E4M3 range.
"""

from __future__ import annotations

import pytest
import torch

from compressor.engine.hessian import HessianAccumulator, inverse_cholesky
from compressor.engine.methods.awq import apply_clip, awq_search_clip, awq_search_scale
from compressor.engine.methods.fp8 import quantize_fp8_e4m3
from compressor.engine.methods.gptq import gptq_quantize
from compressor.engine.methods.hqq import hqq_quantize, shrink_lp
from compressor.engine.methods.smoothquant import smoothing_factors
from compressor.engine.quant import STORE_DTYPE, fake_quant, qparams


def _outlier_inputs(T=512, K=128, seed=0):
    """X [T, K] with a few input channels 20x larger than the rest, as in LLM activations."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(T, K, generator=g)
    X[:, torch.randperm(K, generator=g)[:4]] *= 20.0
    return X


# --- SmoothQuant ---------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.3, 0.8, 1.0])
def test_smoothing_factors_follow_the_paper_for_any_alpha(alpha):
    g = torch.Generator().manual_seed(1)
    act_absmax = torch.rand(64, generator=g) * 10 + 0.1  # (K,)
    Wq, Wk = torch.randn(32, 64, generator=g), torch.randn(16, 64, generator=g) * 3
    w_absmax = torch.maximum(Wq.abs().amax(dim=0), Wk.abs().amax(dim=0))  # over every linear reading X
    expected = act_absmax**alpha / w_absmax ** (1 - alpha)
    torch.testing.assert_close(smoothing_factors(act_absmax, [Wq, Wk], alpha), expected, rtol=1e-5, atol=0)


# --- AWQ -----------------------------------------------------------------------------------------

def test_awq_scale_is_centred_mean_abs_x_to_the_best_alpha():
    X = _outlier_inputs()
    W = torch.randn(48, 128, generator=torch.Generator().manual_seed(2))
    fq = lambda w: fake_quant(w, bits=3, group_size=32)  # noqa: E731
    s, alpha, losses = awq_search_scale(X, [W], [fq], n_grid=10)
    assert alpha > 0, "the outlier channels should make the search pick a non-trivial scale"
    s_X = X.abs().mean(dim=0)  # the paper's s_X: mean |X| per input channel, not max
    raw = s_X.pow(alpha).clamp(min=1e-4)
    torch.testing.assert_close(s, raw / (raw.max() * raw.min()).sqrt(), rtol=1e-5, atol=0)
    assert float(s.max() * s.min()) == pytest.approx(1.0, rel=1e-5)  # centred around 1
    # every grid point's loss, recomputed from the formula
    Y = X @ W.T
    for i, loss in enumerate(losses):
        r = s_X.pow(i / 10).clamp(min=1e-4)
        r = r / (r.max() * r.min()).sqrt()
        expected = (X @ (fq(W * r) / r).T - Y).pow(2).mean().item()
        assert loss == pytest.approx(expected, rel=1e-4)
    assert losses[round(alpha * 10)] == min(losses)


def test_awq_clip_search_lowers_output_error_versus_no_clipping():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(32, 128, generator=g)
    W[torch.rand(W.shape, generator=g) < 0.01] *= 6.0  # a few weight outliers stretch their groups' ranges
    X = torch.randn(256, 128, generator=g)
    fq = lambda w: fake_quant(w, bits=3, group_size=32)  # noqa: E731
    max_val = awq_search_clip(W, X, fq, group_size=32, n_grid=20, max_shrink=0.5)
    org_max = W.reshape(32, 4, 32).abs().amax(dim=-1)  # (N, groups)
    assert max_val.shape == org_max.shape
    assert (max_val <= org_max).all() and (max_val < org_max).float().mean() > 0.2
    assert (max_val >= 0.5 * org_max - 1e-6).all()
    Y = X @ W.T
    err_clip = (X @ fq(apply_clip(W, max_val)).T - Y).pow(2).mean().item()
    err_none = (X @ fq(W).T - Y).pow(2).mean().item()
    assert err_clip < 0.95 * err_none


# --- HQQ -----------------------------------------------------------------------------------------

def _minmax_start(W, bits, G):
    """HQQ's starting point, computed here: min-max step (fp16) and zero -w_min / step (fp16)."""
    Wg = W.reshape(-1, G)  # (groups, G)
    w_min, w_max = Wg.amin(dim=1, keepdim=True), Wg.amax(dim=1, keepdim=True)
    step = ((w_max - w_min) / (2**bits - 1)).to(STORE_DTYPE).float()
    zero = (-w_min / step).to(STORE_DTYPE).float()
    q = torch.round(Wg * (1 / step) + zero).clamp(0, 2**bits - 1)
    return ((q - zero) * step).reshape(W.shape)


def _hqq_dequant(q, scales, zeros, G):
    N, K = q.shape
    return ((q.float().reshape(N, -1, G) - zeros[..., None]) * scales[..., None]).reshape(N, K)  # (N, K)


@pytest.mark.parametrize("bits", [2, 4])
def test_hqq_optimised_zero_beats_its_min_max_start(bits):
    W = torch.randn(32, 256, generator=torch.Generator().manual_seed(4))
    q, scales, zeros = hqq_quantize(W, bits, 64)
    W_hqq, W_0 = _hqq_dequant(q, scales, zeros, 64), _minmax_start(W, bits, 64)
    assert (W - W_hqq).pow(2).mean() < 0.97 * (W - W_0).pow(2).mean()
    assert (W - W_hqq).abs().pow(0.7).mean() < 0.99 * (W - W_0).abs().pow(0.7).mean()  # the objective too
    # same min-max step, and zeros moved off the min-max start
    torch.testing.assert_close(scales, ((W.reshape(32, 4, 64).amax(-1) - W.reshape(32, 4, 64).amin(-1))
                                        / (2**bits - 1)).to(STORE_DTYPE).float())
    assert not torch.equal(zeros, (-W.reshape(32, 4, 64).amin(-1) / scales).to(STORE_DTYPE).float())


def test_hqq_q_is_rounded_against_the_stored_zero():
    W = torch.randn(32, 256, generator=torch.Generator().manual_seed(5))
    q, scales, zeros = hqq_quantize(W, 3, 64)
    assert torch.equal(zeros, zeros.to(STORE_DTYPE).float())  # representable as stored
    expected = torch.round(W.reshape(32, 4, 64) * (1 / scales[..., None]) + zeros[..., None]).clamp(0, 7)
    assert torch.equal(q, expected.reshape(32, 256).to(torch.uint8))


def test_shrink_lp_threshold_depends_on_p():
    x = torch.tensor([-2.0, -0.5, 0.05, 0.3, 1.0, 4.0])
    beta = 4.0
    for p in (0.4, 0.7, 1.0):
        expected = torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)
        torch.testing.assert_close(shrink_lp(x, beta, p), expected)
    assert not torch.equal(shrink_lp(x, beta, 0.4), shrink_lp(x, beta, 0.9))


def test_hqq_lp_norm_changes_the_result():
    W = torch.randn(32, 256, generator=torch.Generator().manual_seed(6))
    _, _, z_low = hqq_quantize(W, 4, 64, lp_norm=0.4)
    _, _, z_high = hqq_quantize(W, 4, 64, lp_norm=0.9)
    assert (z_low - z_high).abs().max() > 0.05


# --- shared integer qparams ----------------------------------------------------------------------

@pytest.mark.parametrize("bits", [3, 4, 8])
def test_asymmetric_zero_is_rounded_to_nearest(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(256, 32, generator=g) + torch.rand(256, 1, generator=g) - 0.5  # xmin < 0 < xmax
    maxq = 2**bits - 1
    xmin, xmax = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    assert (xmin < 0).all() and (xmax > 0).all()
    scale_ref = ((xmax - xmin) / maxq).to(STORE_DTYPE).float()
    zero_ref = torch.round(-xmin / scale_ref).clamp(0, maxq)
    assert (torch.frac(-xmin / scale_ref) > 0.5).any()  # cases where floor and round disagree
    scale, zero = qparams(w, bits, symmetric=False)
    assert torch.equal(scale, scale_ref) and torch.equal(zero, zero_ref)


# --- GPTQ damping --------------------------------------------------------------------------------

def _hessian(K=64, n=256, seed=7):
    acc = HessianAccumulator(K)
    acc.add(torch.randn(n, K, generator=torch.Generator().manual_seed(seed)) * torch.linspace(0.1, 3, K))
    return acc.H


@pytest.mark.parametrize("percdamp", [0.01, 0.3])
def test_inverse_cholesky_damps_by_percdamp_of_mean_diag(percdamp):
    H = _hessian()
    Hinv, damp = inverse_cholesky(H, percdamp)
    assert damp == pytest.approx(percdamp * torch.diag(H).mean().item(), rel=1e-6)
    expected = torch.linalg.inv((H + damp * torch.eye(64)).double())
    torch.testing.assert_close((Hinv.T @ Hinv).double(), expected, rtol=1e-3, atol=1e-4)


def test_percdamp_changes_gptq_result():
    H = _hessian()
    W = torch.randn(16, 64, generator=torch.Generator().manual_seed(8))
    q_small = gptq_quantize(W, H.clone(), bits=3, group_size=32, percdamp=0.001)[0]
    q_large = gptq_quantize(W, H.clone(), bits=3, group_size=32, percdamp=1.0)[0]
    assert (q_small != q_large).sum() > 10


# --- FP8 E4M3 ------------------------------------------------------------------------------------

def test_fp8_rows_use_the_full_e4m3_range_up_to_448():
    g = torch.Generator().manual_seed(9)
    W = torch.randn(8, 64, generator=g) * torch.logspace(-3, 2, 8)[:, None]  # rows of very different scale
    weight, scale = quantize_fp8_e4m3(W)
    assert weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(scale, W.abs().amax(dim=1) / 448.0)
    assert torch.equal(weight.float().abs().amax(dim=1), torch.full((8,), 448.0))
    # a row that is already on the E4M3 grid (448 included) round-trips exactly
    row = torch.tensor([[448.0, -448.0, 1.0, -0.5, 240.0, 0.0, 2.0**-6, 416.0]])
    w8, s8 = quantize_fp8_e4m3(row)
    assert s8.item() == 1.0 and torch.equal(w8.float(), row)
