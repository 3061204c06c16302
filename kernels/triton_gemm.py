"""Fused dequant-matmul for prefill (M > 16): y [M, N] = x [M, K] @ W.T, W packed 2/3/4/8-bit, group-wise.

Shape contract: x fp16/bf16 [M, K] contiguous; qweight uint8 [N, packed_cols(K, bits)];
scales, zeros fp16 [N, K // G]; y [M, N] in x's dtype. Act-order perm is applied to x by the caller.
Tiles: BLOCK_M x BLOCK_N programs walk K in BLOCK_K steps, dequantize the weight tile in registers
(fp32, then x's dtype) and accumulate with tl.dot in fp32. Under TRITON_INTERPRET=1, bf16 tl.dot returns
garbage (Triton 3.9 interpreter), so there the bf16 dot runs in fp32 instead (DOT_FP32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_config import autotune_mode, interpreting
from kernels.triton_dequant import load_dequant_tile

SMALL_CONFIGS = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
FULL_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [
        (32, 64, 64, 4, 3), (64, 64, 64, 4, 3), (64, 128, 64, 4, 4), (128, 128, 32, 8, 3),
        (128, 64, 64, 4, 4), (64, 256, 32, 8, 3), (128, 256, 64, 8, 3), (16, 128, 128, 4, 4),
    ]
]


@triton.jit
def _qgemm_kernel(x_ptr, q_ptr, s_ptr, z_ptr, y_ptr, M, N, K, stride_xm, stride_qn, stride_sn, stride_ym,
                  BITS: tl.constexpr, GROUP: tl.constexpr, DOT_FP32: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)  # (BM, BK)
        w = load_dequant_tile(q_ptr, s_ptr, z_ptr, offs_k, offs_n, K, N, stride_qn, stride_sn, BITS, GROUP)
        if DOT_FP32:
            acc += tl.dot(x.to(tl.float32), w)  # (BM, BN)
        else:
            acc += tl.dot(x, w.to(x.dtype))  # (BM, BN)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_KEY = ["N", "K", "BITS", "GROUP"]
_tuned = {
    "small": triton.autotune(SMALL_CONFIGS, key=_KEY)(_qgemm_kernel),
    "full": triton.autotune(FULL_CONFIGS, key=_KEY)(_qgemm_kernel),
}


def qgemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
          group_size: int, in_features: int, autotune: str | None = None, poison: bool = False) -> torch.Tensor:
    """Launch the GEMM kernel on x [M, K]; `autotune` is "small" / "full" (default: KERNELS_AUTOTUNE).

    `poison=True` fills the output with NaN before the launch (tests: every element must be written).
    """
    if x.dim() != 2 or x.shape[1] != in_features or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp16/bf16 [M, {in_features}], got {x.dtype} {tuple(x.shape)}")
    m, n = x.shape[0], qweight.shape[0]
    x = x.contiguous()
    y = torch.full((m, n), float("nan"), dtype=x.dtype, device=x.device) if poison else \
        torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))  # noqa: E731
    _tuned[autotune_mode(autotune)][grid](x, qweight, scales, zeros, y, m, n, in_features, x.stride(0),
                                          qweight.stride(0), scales.stride(0), y.stride(0),
                                          BITS=bits, GROUP=group_size,
                                          DOT_FP32=interpreting() and x.dtype == torch.bfloat16)
    return y
