"""Fused dequant-GEMV for decode (M = 1..16), split over K: y [M, N] = x [M, K] @ W.T.

Shape contract: x fp16/bf16 [M <= 16, K]; qweight uint8 [N, packed_cols(K, bits)]; scales, zeros fp16
[N, K // G]. Program (n-block, k-split) dequantizes [BLOCK_K, BLOCK_N] weight tiles once and multiplies
all M rows with them on CUDA cores (no tensor-core padding to 16 rows), writing fp32 partial sums
[SPLIT_K, M, N] that are summed afterwards: deterministic, unlike atomics. Decode is bound by reading the
packed weight once, so SPLIT_K is chosen to put about 4 programs on every SM.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_config import autotune_mode
from kernels.triton_dequant import load_dequant_tile

MAX_M = 16
SMALL_CONFIGS = [triton.Config({"BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
FULL_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [
        (32, 128, 4, 2), (64, 64, 4, 2), (64, 128, 4, 3), (128, 64, 4, 3), (128, 128, 8, 3),
        (256, 32, 8, 2), (32, 256, 4, 3), (64, 256, 8, 3),
    ]
]


@triton.jit
def _qgemv_kernel(x_ptr, q_ptr, s_ptr, z_ptr, part_ptr, M, N, K, stride_xm, stride_qn, stride_sn,
                  SPLIT_K: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * k_per_split
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_start + k_per_split, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0).to(tl.float32)  # (BM, BK)
        w = load_dequant_tile(q_ptr, s_ptr, z_ptr, offs_k, offs_n, K, N, stride_qn, stride_sn, BITS, GROUP)
        acc += tl.sum(x[:, :, None] * w[None, :, :], axis=1)  # (BM, BK, BN) -> (BM, BN)
    tl.store(part_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :], acc,
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_KEY = ["N", "K", "BITS", "GROUP", "BLOCK_M", "SPLIT_K"]
_tuned = {
    "small": triton.autotune(SMALL_CONFIGS, key=_KEY)(_qgemv_kernel),
    "full": triton.autotune(FULL_CONFIGS, key=_KEY)(_qgemv_kernel),
}


def _split_k(n: int, k: int, device: torch.device) -> int:
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    programs_n = triton.cdiv(n, 64)
    return max(1, min(16, (4 * sms) // programs_n, k // 256))


def qgemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
          group_size: int, in_features: int, split_k: int | None = None, autotune: str | None = None,
          poison: bool = False) -> torch.Tensor:
    """Launch the split-K GEMV on x [M <= 16, K]; `poison=True` fills the partial sums with NaN first."""
    if x.dim() != 2 or x.shape[1] != in_features or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp16/bf16 [M, {in_features}], got {x.dtype} {tuple(x.shape)}")
    m, n = x.shape[0], qweight.shape[0]
    if m > MAX_M:
        raise ValueError(f"qgemv takes at most {MAX_M} rows, got M={m}: use kernels.triton_gemm.qgemm")
    x = x.contiguous()
    split = split_k or _split_k(n, in_features, x.device)
    shape = (split, m, n)
    part = torch.full(shape, float("nan"), dtype=torch.float32, device=x.device) if poison else \
        torch.empty(shape, dtype=torch.float32, device=x.device)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), split)  # noqa: E731
    _tuned[autotune_mode(autotune)][grid](x, qweight, scales, zeros, part, m, n, in_features, x.stride(0),
                                          qweight.stride(0), scales.stride(0), SPLIT_K=split, BITS=bits,
                                          GROUP=group_size, BLOCK_M=max(1, triton.next_power_of_2(m)))
    return part.sum(dim=0).to(x.dtype)  # (M, N)
