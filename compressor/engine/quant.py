"""Pure tensor functions for integer weight quantization, shared by every integer method.

Format (docs/architecture.md): for W [N, K] and group size G, per group g = k // G

    W[n, k] ~= (q[n, k] - zeros[n, g]) * scales[n, g],   q in [0, 2**bits - 1],
    scales, zeros fp16 [N, K // G]; symmetric quantization has zeros = 2**(bits - 1).

Parameters follow GPTQ's `Quantizer.find_params` (and compressed-tensors' min-max observer): the
range always includes 0, asymmetric zeros are rounded to integers, and an all-zero group gets the
range [-1, 1]. Scales are rounded to fp16 *before* q is computed, so that q is optimal for the
scales actually stored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Scales are stored in fp16: keep them representable (above fp16's smallest subnormals).
MIN_SCALE = 1e-7
STORE_DTYPE = torch.float16


def qparams(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero for each row of `w` [..., G] (reduced over the last dim) -> ([..., 1], [..., 1]) fp32.

    Scales come back already rounded through fp16, zeros as integers (asym) or 2**(bits-1) (sym).
    """
    maxq = 2**bits - 1
    w = w.float()
    xmin = w.amin(dim=-1, keepdim=True).clamp(max=0)
    xmax = w.amax(dim=-1, keepdim=True).clamp(min=0)
    if symmetric:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = ((xmax - xmin) / maxq).clamp(min=MIN_SCALE).to(STORE_DTYPE).float()
    if symmetric:
        zero = torch.full_like(scale, 2 ** (bits - 1))
    else:
        zero = torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero


def quantize_with(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """q = clamp(round(w / scale) + zero, 0, 2**bits - 1), float-valued (broadcasting scale/zero)."""
    return torch.clamp(torch.round(w.float() / scale) + zero, 0, 2**bits - 1)


def quantize(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest W [N, K] -> (q uint8 [N, K], scales fp16 [N, K//G], zeros fp16 [N, K//G]).

    group_size -1 (or K) means one scale per output channel.
    """
    n, k = w.shape
    g = k if group_size in (-1, k) else group_size
    if k % g:
        from compressor.engine.stage import divisor_hint

        raise ValueError(f"group_size {g} must divide in_features {k}: {divisor_hint(k)}")
    wg = w.float().reshape(n, k // g, g)  # (N, K/G, G)
    scale, zero = qparams(wg, bits, symmetric)  # (N, K/G, 1)
    q = quantize_with(wg, scale, zero, bits).reshape(n, k).to(torch.uint8)
    return q, scale.squeeze(-1).to(STORE_DTYPE), zero.squeeze(-1).to(STORE_DTYPE)


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """W [N, K] fp32 from q [N, K] and per-group scales/zeros [N, K//G] (G = K // scales.shape[1])."""
    n, k = q.shape
    g = k // scales.shape[1]
    qg = q.float().reshape(n, -1, g)  # (N, K/G, G)
    return ((qg - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)).reshape(n, k)


def fake_quant(w: torch.Tensor, bits: int, group_size: int, symmetric: bool = False) -> torch.Tensor:
    """Quantize then dequantize W [N, K]; returns fp32."""
    return dequantize(*quantize(w, bits, group_size, symmetric))


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10*log10(|ref|^2 / |ref - approx|^2) in dB (inf when equal)."""
    ref, approx = ref.double(), approx.double()
    noise = (ref - approx).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def pack_linear(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int, group_size: int,
                bias: torch.Tensor | None = None, perm: torch.Tensor | None = None) -> nn.Module:
    """The packed module for a quantized weight (kernels.modules.QuantLinear); group_size in columns."""
    from kernels.modules import QuantLinear

    return QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=group_size,
                                      bias=None if bias is None else bias.detach().clone(), perm=perm)
