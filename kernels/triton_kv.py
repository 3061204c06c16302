"""Triton group-wise KV quantize / dequantize (2/4/8-bit) over the last axis; reference in kernels/kv.py.

Shape contract: x [*rest, L] (any float dtype) is viewed as rows [R, L]; program (row block, group)
handles BLOCK_R rows x G values: min/max -> fp16 scale and zero -> q -> packed bytes, V = 8 / bits values
per byte, lowest index in the lowest bits (kernels.pack layout for 2/4/8 bits).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.pack import packed_cols

BLOCK_R = 16


@triton.jit
def _quantize_kv_kernel(x_ptr, p_ptr, s_ptr, z_ptr, R, L, BITS: tl.constexpr, GROUP: tl.constexpr,
                        BLOCK_R: tl.constexpr):
    pid_r = tl.program_id(0)
    gid = tl.program_id(1)
    V: tl.constexpr = 8 // BITS
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = gid * GROUP + tl.arange(0, GROUP)
    rmask = rows < R
    x = tl.load(x_ptr + rows[:, None] * L + cols[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)  # (BR, G)
    mn = tl.min(x, axis=1)
    mx = tl.max(x, axis=1)
    # same floor as kernels.kv.quantize_kv_ref: relative 1e-4, absolute 2**-14 (no 0 scale in fp16)
    floor = tl.maximum(1e-4 * tl.maximum(tl.abs(mn), tl.abs(mx)), 6.103515625e-05)
    scale = tl.maximum((mx - mn) / (2**BITS - 1), floor).to(tl.float16).to(tl.float32)
    zero = (-mn / scale).to(tl.float16).to(tl.float32)
    q = tl.floor(x / scale[:, None] + zero[:, None] + 0.5)
    q = tl.minimum(tl.maximum(q, 0.0), 2**BITS - 1).to(tl.int32)
    q = tl.reshape(q, (BLOCK_R, GROUP // V, V))
    shifts = tl.arange(0, V) * BITS
    packed = tl.sum(q << shifts[None, None, :], axis=2)  # (BR, G/V)
    pcols = gid * (GROUP // V) + tl.arange(0, GROUP // V)
    tl.store(p_ptr + rows[:, None] * (L // V) + pcols[None, :], packed.to(tl.uint8), mask=rmask[:, None])
    n_groups = L // GROUP
    tl.store(s_ptr + rows * n_groups + gid, scale.to(tl.float16), mask=rmask)
    tl.store(z_ptr + rows * n_groups + gid, zero.to(tl.float16), mask=rmask)


@triton.jit
def _dequantize_kv_kernel(p_ptr, s_ptr, z_ptr, y_ptr, R, L, BITS: tl.constexpr, GROUP: tl.constexpr,
                          BLOCK_R: tl.constexpr):
    pid_r = tl.program_id(0)
    gid = tl.program_id(1)
    V: tl.constexpr = 8 // BITS
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = gid * GROUP + tl.arange(0, GROUP)
    rmask = rows < R
    b = tl.load(p_ptr + rows[:, None] * (L // V) + cols[None, :] // V, mask=rmask[:, None], other=0).to(tl.int32)
    q = (b >> ((cols[None, :] % V) * BITS)) & (2**BITS - 1)
    n_groups = L // GROUP
    s = tl.load(s_ptr + rows * n_groups + gid, mask=rmask, other=0).to(tl.float32)
    z = tl.load(z_ptr + rows * n_groups + gid, mask=rmask, other=0).to(tl.float32)
    y = (q.to(tl.float32) - z[:, None]) * s[:, None]
    tl.store(y_ptr + rows[:, None] * L + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=rmask[:, None])


def quantize_kv_triton(x: torch.Tensor, bits: int, group_size: int, poison: bool = False):
    """x [*rest, L] -> (packed uint8 [*rest, L*bits/8], scales fp16 [*rest, L/G], zeros fp16 [*rest, L/G])."""
    rest, length = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, length).contiguous()  # (R, L)
    r = x2.shape[0]
    new = (lambda *s, dtype: torch.full(s, 255 if dtype == torch.uint8 else float("nan"), dtype=dtype,
                                        device=x.device)) if poison else \
        (lambda *s, dtype: torch.empty(s, dtype=dtype, device=x.device))
    packed = new(r, packed_cols(length, bits), dtype=torch.uint8)
    scales = new(r, length // group_size, dtype=torch.float16)
    zeros = new(r, length // group_size, dtype=torch.float16)
    grid = (triton.cdiv(r, BLOCK_R), length // group_size)
    _quantize_kv_kernel[grid](x2, packed, scales, zeros, r, length, BITS=bits, GROUP=group_size, BLOCK_R=BLOCK_R)
    return packed.reshape(*rest, -1), scales.reshape(*rest, -1), zeros.reshape(*rest, -1)


def dequantize_kv_triton(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                         group_size: int, length: int, dtype: torch.dtype = torch.float16,
                         poison: bool = False) -> torch.Tensor:
    """Inverse of `quantize_kv_triton`: -> [*rest, L] in `dtype`."""
    rest = packed.shape[:-1]
    p2 = packed.reshape(-1, packed.shape[-1]).contiguous()  # (R, L*bits/8)
    r = p2.shape[0]
    y = torch.full((r, length), float("nan"), dtype=dtype, device=packed.device) if poison else \
        torch.empty((r, length), dtype=dtype, device=packed.device)
    grid = (triton.cdiv(r, BLOCK_R), length // group_size)
    _dequantize_kv_kernel[grid](p2, scales.reshape(r, -1).contiguous(), zeros.reshape(r, -1).contiguous(), y, r,
                                length, BITS=bits, GROUP=group_size, BLOCK_R=BLOCK_R)
    return y.reshape(*rest, length)
