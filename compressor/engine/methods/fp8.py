"""FP8 E4M3 weights with one scale per output channel, calibration-free.

Micikevicius et al., "FP8 Formats for Deep Learning" (2022), https://arxiv.org/abs/2209.05433

E4M3 has 3 mantissa bits and a largest finite value of 448. Each row is scaled so that its largest
magnitude maps to 448, then cast (round to nearest even) to torch.float8_e4m3fn. The packed module is
kernels' FP8Linear: 1 byte per weight plus a fp32 scale per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressor.engine.quant import sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448.0


@dataclass
class FP8Config(StageConfig):
    """FP8 E4M3 weight-only quantization with per-output-channel scales; no calibration data.

    Args:
        targets: regex of the linear layers to convert; default all.
        ignore: regexes left alone; default lm_head and embeddings.
        overrides: {pattern, skip: true} entries to keep chosen layers in full precision.
    """

    def traits(self) -> tuple[set[str], float | None]:
        return {"fp8"}, 8.0


def quantize_fp8_e4m3(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W [N, K] -> (weight float8_e4m3fn [N, K], weight_scale fp32 [N]) with W ~= weight * scale[:, None]."""
    scale = W.float().abs().amax(dim=1).clamp(min=1e-12) / E4M3_MAX  # (N,)
    weight = (W.float() / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return weight, scale


@register("fp8", FP8Config)
def apply(cfg: FP8Config, ctx) -> None:
    """Replace every targeted linear by kernels' FP8Linear."""
    from kernels.modules import FP8Linear

    for name, linear in ctx.targets().items():
        W = linear.weight.data
        weight, scale = quantize_fp8_e4m3(W)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        ctx.replace(name, FP8Linear.from_quantized(weight, scale, bias=bias))
        ctx.record(name, weight_sqnr_db=sqnr_db(W, weight.float() * scale[:, None]), bits=8)
