"""Dequantize the GPU words into a dense W.T [K, N] in x's dtype, for long prefills where one dense cuBLAS matmul
over the whole weight beats the fused GEMM (its per-tile dequantization is paid again for every M block).

Shape contract: words int32 [W, N], sz int32 [K // G, N] (kernels/triton_layout.py) -> out [K, N] fp16/bf16/fp32.
Program (k tile, n block) reads its [BLOCK_K / V, BLOCK_N] words once, takes the fields in registers
(triton_dequant.slab_tile) and writes (q - z) * s at the columns their rows stand for (slab_columns), 16-byte
stores along N. The result is what kernels.reference.dequantize gives, transposed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_config import fit_block_k
from kernels.triton_dequant import scale_zero, slab_columns, slab_tile
from kernels.triton_layout import plane_rows, word_rows

BLOCK_N, BLOCK_K = 128, 64  # BLOCK_K is cut to the group (one tile, one scale row)


@triton.jit
def _dequant_kernel(w_ptr, sz_ptr, out_ptr, N, K, GROUP, KW, PLANE, stride_wk, stride_ok,
                    BITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    BKW: tl.constexpr = BLOCK_K // V
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    n_mask = offs_n < N
    rows = pid_k * BKW + tl.arange(0, BKW)
    w_ptrs = w_ptr + rows[:, None] * stride_wk + offs_n[None, :]  # (BKW, BN)
    f = slab_tile(w_ptrs, (rows < KW)[:, None] & n_mask[None, :], PLANE, BITS, BLOCK_K)  # (BK, BN)
    k0 = pid_k * BLOCK_K
    s, z = scale_zero(tl.load(sz_ptr + (k0 // GROUP).to(tl.int64) * N + offs_n, mask=n_mask, other=0))
    w = f * (s * (1 << BITS))[None, :] - (((1 << BITS) + z) * s)[None, :]  # (BK, BN) = (q - z) * s
    offs_k = k0 + slab_columns(BITS, BLOCK_K)
    out = out_ptr + offs_k.to(tl.int64)[:, None] * stride_ok + offs_n[None, :]
    tl.store(out, w.to(out_ptr.dtype.element_ty), mask=(offs_k < K)[:, None] & n_mask[None, :])


def dequantize_t(words: torch.Tensor, sz: torch.Tensor, *, bits: int, group_size: int, in_features: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """W.T [K, N] in `dtype` from the GPU layout (words int32 [W, N], sz int32 [K // G, N])."""
    n = words.shape[1]
    out = torch.empty((in_features, n), dtype=dtype, device=words.device)
    if n == 0 or in_features == 0:
        return out
    block_k = fit_block_k(BLOCK_K, group_size=group_size, in_features=in_features, bits=bits, minimum=32)
    grid = (triton.cdiv(in_features, block_k), triton.cdiv(n, BLOCK_N))
    _dequant_kernel[grid](words, sz, out, n, in_features, group_size,
                          plane_rows(bits, in_features) or word_rows(bits, in_features),
                          plane_rows(bits, in_features) * words.stride(0), words.stride(0), out.stride(0),
                          BITS=bits, BLOCK_N=BLOCK_N, BLOCK_K=block_k)
    return out
