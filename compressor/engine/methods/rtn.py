"""RTN: round-to-nearest integer weight quantization, per channel or per group, no calibration.

The baseline every other method is measured against: min-max scales and zeros per group
(compressor/engine/quant.py), weights rounded to the nearest level, packed into kernels' QuantLinear.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from compressor.engine.quant import dequantize, pack_linear, quantize, sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import QuantStageConfig


@dataclass
class RTNConfig(QuantStageConfig):
    """Round-to-nearest weight quantization.

    Args:
        bits: 2, 3, 4 or 8.
        group_size: columns per scale/zero (32, 64, 128, ...); -1 = per output channel.
        symmetric: zero fixed at 2**(bits-1) instead of a per-group zero point.
        targets, ignore, overrides: module selection (see compressor/engine/recipe.py).
    """


@register("rtn", RTNConfig)
def apply(cfg: RTNConfig, ctx) -> None:
    for warning in cfg.plan_warnings(ctx.model):  # layers the group size does not fit
        ctx.warn(warning)
    targets = ctx.targets()
    for i, (name, linear) in enumerate(targets.items()):
        t0 = time.perf_counter()
        c = ctx.override_for(name)
        W = linear.weight.detach()  # (N, K)
        G = c.group_for(W.shape[1])
        q, scales, zeros = quantize(W, c.bits, G, c.symmetric)
        ctx.replace(name, pack_linear(q, scales, zeros, bits=c.bits, group_size=G, bias=linear.bias))
        ctx.record(name, weight_sqnr_db=sqnr_db(W, dequantize(q, scales, zeros)), bits=c.bits, group_size=G,
                   seconds=time.perf_counter() - t0)
        ctx.progress(i + 1, len(targets), name)
