"""SmoothQuant W8A8: migrate activation outliers into the weights, then int8 weights and activations.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models" (ICML 2023), https://arxiv.org/abs/2211.10438

Activations of LLMs have a few channels with huge magnitudes, which ruin per-token int8. SmoothQuant
divides each input channel j by s_j = max|X_j|^alpha / max|W_j|^(1-alpha) and multiplies the weight
columns by s_j (Y = (X diag(s)^-1)(diag(s) W^T), exact in real numbers). 1/s is folded into the
preceding RMSNorm weight, so the runtime sees no extra op. Weights are then int8 per output channel
and activations int8 per token, quantized at run time by kernels' Int8DynamicLinear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from compressor.engine.methods.awq import fold_scale, foldable_groups
from compressor.engine.quant import sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError

# Floors that keep s finite for dead channels (all-zero activations or weight columns).
MIN_ABSMAX = 1e-5
# Calibration tokens used to report each layer's output SQNR through the real int8 kernel.
SQNR_TOKENS = 2048


@dataclass
class SmoothQuantConfig(StageConfig):
    """SmoothQuant W8A8: int8 per-channel weights, dynamic per-token int8 activations. Needs calibration.

    Args:
        alpha: migration strength in [0, 1]; 0.5 in the paper for most models (higher moves more of
            the activation range into the weights).
        smooth: false skips the smoothing: plain W8A8 (int8 per-channel weights, per-token int8
            activations), the baseline that shows what smoothing buys.
        targets, ignore, overrides: module selection (see StageConfig). Smoothing applies to the
            inputs produced by a norm (q/k/v, gate/up); every targeted linear becomes W8A8.
    """

    needs_calibration: ClassVar[bool] = True

    alpha: float = 0.5
    smooth: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise RecipeError("alpha", self.alpha, "use a migration strength in [0, 1] (the paper uses 0.5)",
                              self.method or type(self).__name__)
        if not isinstance(self.smooth, bool):
            raise RecipeError("smooth", self.smooth, "use true or false", self.method or type(self).__name__)

    def label(self) -> str:
        return self.method if self.smooth else f"{self.method} off (plain W8A8)"

    def traits(self) -> tuple[set[str], float | None]:
        return {"int8-dynamic"}, 8.0


def smoothing_factors(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s [K] = max|X_j|^alpha / max|W_j|^(1-alpha), W_j over all linears that read X (paper eq. 4).

    act_absmax: [K] per-channel max |X| over the calibration tokens; weights: [N_i, K] each.
    """
    w_absmax = torch.cat([W.float() for W in weights], dim=0).abs().amax(dim=0)  # (K,)
    s = act_absmax.float().clamp(min=MIN_ABSMAX).pow(alpha) / w_absmax.clamp(min=MIN_ABSMAX).pow(1 - alpha)
    return s.clamp(min=MIN_ABSMAX)


def quantize_int8_per_channel(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: W [N, K] -> (q int8 [N, K] in [-127, 127], scale fp32 [N])."""
    scale = W.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (N,)
    q = torch.round(W.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


@register("smoothquant", SmoothQuantConfig)
def apply(cfg: SmoothQuantConfig, layer_ctx) -> None:
    """Smooth the norm-fed inputs of the layer, then replace its targets by Int8DynamicLinear."""
    from kernels.modules import Int8DynamicLinear

    targets = layer_ctx.targets()
    X = layer_ctx.input_activations(list(targets))  # {name: [T, K]} before smoothing
    W0 = {n: m.weight.detach().float().clone() for n, m in targets.items()}
    prefix = layer_ctx.prefix
    s_in = {}
    for prev, names in foldable_groups(layer_ctx.layer) if cfg.smooth else []:
        full = [f"{prefix}.{n}" if prefix else n for n in names]
        if isinstance(prev, nn.Linear) or not any(n in targets for n in full):
            continue  # the paper smooths the inputs of QKV and FC1 only, whose producer is a norm
        linears = [layer_ctx.layer.get_submodule(n) for n in names]
        x = X[next(n for n in full if n in targets)]
        s = smoothing_factors(x.abs().amax(dim=0), [m.weight for m in linears], cfg.alpha)
        fold_scale(prev, linears, s)
        s_in.update(dict.fromkeys(full, s))
    for name, linear in targets.items():
        q, scale = quantize_int8_per_channel(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach().clone()
        module = Int8DynamicLinear.from_quantized(q, scale, bias=bias)
        # Output SQNR on calibration tokens through the real W8A8 path vs the original linear.
        x = X[name][:: max(1, X[name].shape[0] // SQNR_TOKENS)]
        ref = x @ W0[name].T + (0 if bias is None else bias.float())
        with torch.no_grad():
            out = module((x if name not in s_in else x / s_in[name]).to(linear.weight.dtype)).float()
        layer_ctx.replace(name, module)
        layer_ctx.record(name, sqnr_db=sqnr_db(ref, out), bits=8, smoothed=name in s_in)
