"""HQQ: Half-Quadratic Quantization, calibration-free.

Badri & Shaji, "Half-Quadratic Quantization of Large Machine Learning Models" (Mobius Labs, 2023),
https://mobiusml.github.io/hqq_blog/ ; reference code: mobiusml/hqq `optimize_weights_proximal`.

HQQ keeps the min-max scale of each group and optimises its zero point so that the quantization
error is sparse: it minimises ||W - Q^-1(Q(W))||_p^p with p < 1 by half-quadratic splitting, i.e.
alternating a generalised soft-threshold (shrinkage) of the error W_e with a closed-form zero update.
Zeros come out fractional, which the shared weight format stores as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressor.engine.quant import STORE_DTYPE, dequantize, pack_linear, sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import QuantStageConfig
from compressor.errors import RecipeError

# HQQ's published defaults (hqq/core/optimize.py): p of the lp-norm, the half-quadratic penalty beta
# and its growth factor kappa per iteration.
HQQ_LP_NORM = 0.7
HQQ_BETA = 10.0
HQQ_KAPPA = 1.01
# Inverse scales above this come from constant groups (max == min); HQQ clamps them the same way.
MAX_INV_SCALE = 2e4
ZERO_LIMIT = 1e4  # |zero| beyond this is refitted (fp16 tops out at 65504; iterations move it a little)


@dataclass
class HQQConfig(QuantStageConfig):
    """HQQ weight-only quantization (asymmetric, fractional zeros), no calibration data.

    Args:
        bits: weight bits (2, 3, 4 or 8).
        group_size: columns sharing one scale and zero (HQQ's default is 64); -1 = per channel.
        symmetric: must stay False: HQQ optimises the zero point.
        iters: half-quadratic iterations (HQQ uses 20).
        lp_norm: p < 1 of the sparsity-promoting error norm (0.7).
        beta: initial half-quadratic penalty (10).
        kappa: growth of beta per iteration (1.01).
    """

    group_size: int = 64
    iters: int = 20
    lp_norm: float = HQQ_LP_NORM
    beta: float = HQQ_BETA
    kappa: float = HQQ_KAPPA

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if self.symmetric:
            raise RecipeError("symmetric", self.symmetric, "HQQ optimises a per-group zero point: use "
                              "symmetric: false (or method rtn for symmetric quantization)", stage)
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or not 1 <= self.iters <= 1000:
            raise RecipeError("iters", self.iters, "use an integer from 1 to 1000 (HQQ uses 20)", stage)
        if not isinstance(self.lp_norm, (int, float)) or not 0 < self.lp_norm <= 1:
            raise RecipeError("lp_norm", self.lp_norm, "use 0 < p <= 1 (HQQ uses 0.7)", stage)
        if not isinstance(self.beta, (int, float)) or self.beta <= 0:
            raise RecipeError("beta", self.beta, "use a positive penalty (HQQ uses 10)", stage)
        if not isinstance(self.kappa, (int, float)) or self.kappa < 1:
            raise RecipeError("kappa", self.kappa, "use kappa >= 1 (HQQ uses 1.01)", stage)


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """Proximal operator of the lp-norm (p <= 1): a soft threshold that shrinks small errors to zero."""
    if p == 1:
        return torch.sign(x) * torch.relu(x.abs() - 1.0 / beta)
    return torch.sign(x) * torch.relu(x.abs() - (1.0 / beta) * x.abs().clamp_min(1e-12).pow(p - 1))


@torch.no_grad()
def hqq_quantize(W: torch.Tensor, bits: int, group_size: int, *, iters: int = 20,
                 lp_norm: float = HQQ_LP_NORM, beta: float = HQQ_BETA, kappa: float = HQQ_KAPPA,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize W [N, K] group-wise with HQQ zero-point optimisation.

    Returns q uint8 [N, K] in [0, 2**bits - 1], scales and zeros fp32 [N, K // group_size], with
    W ~= (q - zeros) * scales (the shared weight format; zeros are fractional).
    """
    N, K = W.shape
    if K % group_size:
        raise ValueError(f"group_size {group_size} must divide in_features {K}")
    max_q = 2**bits - 1
    W_f = W.float().reshape(-1, group_size)  # (N * K/G, G): one row per group
    w_min = W_f.min(dim=1, keepdim=True).values
    w_max = W_f.max(dim=1, keepdim=True).values
    # HQQ's convention: W_q = round(W * scale + zero) with scale the *inverse* step size. The step
    # is rounded through fp16 first so q is optimal for the scale actually stored.
    step = ((w_max - w_min) / max_q).clamp(min=1.0 / MAX_INV_SCALE, max=65504.0).to(STORE_DTYPE).float()
    zero = -w_min * (1.0 / step)
    # A (near-)constant group far from 0 gets a tiny step and a zero beyond fp16's range (stored as inf).
    # Such groups take their range widened to include 0, as RTN's always is: the zero then lies in
    # [0, max_q] and the constant is represented to within half a step.
    wide = zero.abs() > ZERO_LIMIT
    if bool(wide.any()):
        step_w = ((w_max.clamp(min=0.0) - w_min.clamp(max=0.0)) / max_q).clamp(
            min=1.0 / MAX_INV_SCALE, max=65504.0).to(STORE_DTYPE).float()
        step = torch.where(wide, step_w, step)
        zero = torch.where(wide, -w_min.clamp(max=0.0) * (1.0 / step_w), zero)
    scale = 1.0 / step  # (N * K/G, 1)
    best_zero, best_err = zero.clone(), torch.full_like(zero, float("inf"))
    for _ in range(iters):
        W_q = torch.round(W_f * scale + zero).clamp(0, max_q)
        W_r = (W_q - zero) / scale
        # Track the best zero of each group by its squared error, so the result is never worse
        # than the min-max start (the reference stops on the mean absolute error of the whole tensor).
        err = (W_f - W_r).pow(2).mean(dim=1, keepdim=True)
        better = err < best_err
        best_zero = torch.where(better, zero, best_zero)
        best_err = torch.where(better, err, best_err)
        W_e = shrink_lp(W_f - W_r, beta, lp_norm)  # sparse part of the error
        zero = torch.mean(W_q - (W_f - W_e) * scale, dim=1, keepdim=True)
        beta *= kappa
    best_zero = best_zero.to(STORE_DTYPE).float()  # stored in fp16: round q against that
    q = torch.round(W_f * scale + best_zero).clamp(0, max_q)
    scales = step.reshape(N, K // group_size)
    zeros = best_zero.reshape(N, K // group_size)
    return q.reshape(N, K).to(torch.uint8), scales, zeros


@register("hqq", HQQConfig)
def apply(cfg: HQQConfig, ctx) -> None:
    """Quantize every targeted linear with HQQ and replace it by a packed QuantLinear."""
    for warning in cfg.plan_warnings(ctx.model):  # layers the group size does not fit
        ctx.warn(warning)
    for name, linear in ctx.targets().items():
        c = ctx.override_for(name) or cfg
        G = c.group_for(linear.in_features)
        W = linear.weight.data
        q, scales, zeros = hqq_quantize(W, c.bits, G, iters=c.iters, lp_norm=c.lp_norm, beta=c.beta, kappa=c.kappa)
        ctx.replace(name, pack_linear(q, scales, zeros, bits=c.bits, group_size=G, bias=linear.bias))
        W_hat = dequantize(q, scales.to(STORE_DTYPE), zeros.to(STORE_DTYPE))
        ctx.record(name, weight_sqnr_db=sqnr_db(W, W_hat), bits=c.bits, group_size=G)
