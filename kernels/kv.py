"""Group-wise asymmetric KV-cache quantization (2/4/8-bit), torch reference and Triton dispatch.

KIVI (Liu et al. 2024, https://arxiv.org/abs/2402.02750) quantizes keys per channel (groups run along
the token axis) and values per token (groups run along the channel axis), so `axis` names the dimension
the groups run along:

    quantize_kv(x [..., L, ...], bits, group_size, axis) -> (packed, scales, zeros)
        packed  uint8 [*rest, packed_cols(L, bits)]   the `axis` dimension moved last, kernels.pack layout
        scales, zeros fp16 [*rest, L // G]            x ~ (q - zeros) * scales, q = round(x / s + z) in [0, 2**b - 1]
    dequantize_kv(packed, scales, zeros, bits=, group_size=, axis=, length=L) -> x back in its layout

Rounding is floor(v + 0.5) (Triton has no round-half-even) and uses the fp16-rounded scale and zero,
so dequantization sees exactly the values quantization assumed.
"""

from __future__ import annotations

import torch

from kernels.pack import pack, unpack

KV_BITS = (2, 4, 8)


def _check(bits: int, group_size: int, length: int) -> None:
    if bits not in KV_BITS:
        raise ValueError(f"KV bits={bits} is not supported: choose one of {KV_BITS}")
    if group_size <= 0 or length % group_size:
        raise ValueError(f"group_size={group_size} must divide the quantized axis length {length}: "
                         f"try one of {[d for d in (16, 32, 64, 128) if length % d == 0] or [length]}")


KV_MIN_SCALE = 2.0**-14  # fp16's smallest normal number
KV_MIN_REL_SCALE = 1e-4  # scale >= 1e-4 * max|x| in the group


def quantize_kv_ref(x: torch.Tensor, bits: int, group_size: int, axis: int):
    """Torch reference of `quantize_kv` (see module docstring for shapes)."""
    _check(bits, group_size, x.shape[axis])
    xt = x.movedim(axis, -1).float()  # (*rest, L)
    rest, length = xt.shape[:-1], xt.shape[-1]
    g = xt.reshape(*rest, length // group_size, group_size)  # (*rest, L/G, G)
    mn, mx = g.amin(dim=-1), g.amax(dim=-1)
    # A constant group (BOS values, say) has no range: floor the scale relative to the magnitude and
    # above fp16's smallest normal, so scale is never 0 in fp16 and |zero| stays below 1e4 (no inf/NaN).
    floor = torch.maximum(KV_MIN_REL_SCALE * torch.maximum(mn.abs(), mx.abs()), torch.tensor(KV_MIN_SCALE))
    scales = torch.maximum((mx - mn) / (2**bits - 1), floor).half()
    zeros = (-mn / scales.float()).half()
    q = torch.floor(g / scales.float()[..., None] + zeros.float()[..., None] + 0.5).clamp(0, 2**bits - 1)
    return pack(q.to(torch.uint8).reshape(*rest, length), bits), scales, zeros


def dequantize_kv_ref(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                      group_size: int, axis: int, length: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Torch reference of `dequantize_kv`."""
    _check(bits, group_size, length)
    q = unpack(packed, bits, length).float()  # (*rest, L)
    rest = q.shape[:-1]
    g = q.reshape(*rest, length // group_size, group_size)  # (*rest, L/G, G)
    x = (g - zeros.float()[..., None]) * scales.float()[..., None]
    return x.reshape(*rest, length).to(dtype).movedim(-1, axis)


def _use_triton(x: torch.Tensor, group_size: int) -> bool:
    return x.is_cuda and group_size & (group_size - 1) == 0 and group_size >= 8


def quantize_kv(x: torch.Tensor, bits: int, group_size: int, axis: int):
    """Quantize x group-wise along `axis` (Triton on CUDA, the torch reference elsewhere)."""
    if not _use_triton(x, group_size):
        return quantize_kv_ref(x, bits, group_size, axis)
    from kernels.triton_kv import quantize_kv_triton

    _check(bits, group_size, x.shape[axis])
    return quantize_kv_triton(x.movedim(axis, -1), bits, group_size)


def dequantize_kv(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int, group_size: int,
                  axis: int, length: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Inverse of `quantize_kv` up to quantization error, returned in x's original layout."""
    if not _use_triton(packed, group_size):
        return dequantize_kv_ref(packed, scales, zeros, bits=bits, group_size=group_size, axis=axis,
                                 length=length, dtype=dtype)
    from kernels.triton_kv import dequantize_kv_triton

    _check(bits, group_size, length)
    x = dequantize_kv_triton(packed, scales, zeros, bits=bits, group_size=group_size, length=length, dtype=dtype)
    return x.movedim(-1, axis)
