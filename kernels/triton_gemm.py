"""Fused dequant-GEMM on tensor cores: y [M, N] = x [M, K] @ W.T for M above triton_ops.GEMV_MAX_M (decode batches
and prefill), W packed 2/3/4/8-bit in the GPU words (kernels/triton_layout.py).

Shape contract: x fp16/bf16/fp32 [M, K] (last dim contiguous); words int32 [W, N] and sz int32 [K // G, N];
perm int32 [K] or None (act-order, gathered in the kernel); bias [N] or None; y [M, N] in x's dtype. tl.dot
accumulates in fp32 (fp32 x: full-precision "ieee" dots).

Program (m block, n block, k split) walks its share of K in tiles of BLOCK_K values inside one group:
    - the tile's [BLOCK_K / V, BLOCK_N] words load once (coalesced along N) and each word's V fields are
      taken in registers with constant shifts (triton_dequant.slab_tile), so the dequantized [BLOCK_K, BLOCK_N]
      tile comes field-major; x's columns are gathered in that same order (slab_columns: runs of R
      consecutive values, so vector loads), which leaves the dot product unchanged;
    - one FMA per element with the group's a and c (one int32 scale/zero vector per tile) gives (q - z) * s,
      cast to x's dtype for the dot.
Output tiles go in GROUP_M-row bands so weight tiles stay in L2 across m blocks. Small-M buckets split K
and add into a zeroed y atomically (one pass); the autotune key holds the M bucket, so decode batches and
prefill get their own configs. Row offsets are 64-bit (a quantized lm_head at a long prefill passes 2**31
elements). Under TRITON_INTERPRET=1, bf16 tl.dot returns garbage (Triton 3.9 interpreter): there it runs in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_config import (
    autotune_mode,
    fit_block_k,
    interpreting,
    launch_args,
    m_bucket,
    pinned_meta,
    sm_count,
    split_k,
    zero_output,
)
from kernels.triton_dequant import scale_zero, slab_columns, slab_tile, split_tiles

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) by the largest M bucket they serve; the decode-batch list
# is ordered by the loop's static cost (python -m kernels.triton_sass --kernel gemm: ~6 instructions a weight)
SMALL = {16: (16, 64, 128, 4, 3), 64: (64, 64, 64, 4, 3), 1 << 30: (128, 128, 64, 8, 3)}
FULL = {
    16: [(16, 128, 128, 4, 3), (16, 256, 128, 8, 3), (16, 256, 64, 4, 3), (16, 64, 128, 4, 3), (16, 128, 64, 4, 4),
         (16, 64, 256, 4, 3)],
    64: [(32, 64, 128, 4, 3), (64, 64, 128, 4, 3), (32, 128, 64, 4, 4), (64, 128, 64, 4, 4), (64, 128, 128, 8, 3)],
    256: [(64, 128, 64, 4, 4), (128, 128, 64, 8, 3), (64, 256, 64, 8, 3), (128, 64, 64, 4, 4), (64, 64, 128, 4, 4)],
    1 << 30: [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 128, 128, 8, 3), (64, 256, 64, 8, 4),
              (128, 64, 64, 4, 4), (256, 128, 64, 8, 3)],
}
GROUP_M = 8
SPLIT_UP_TO = 64  # M buckets at or below this may split K


# one binary for every split and M bucket: SPLIT_K == 1 picks a plain store at run time
@triton.jit(do_not_specialize=["GROUP", "M_BUCKET", "SPLIT_K"])
def _qgemm_kernel(x_ptr, w_ptr, sz_ptr, perm_ptr, bias_ptr, y_ptr, M, N, K, GROUP, KW, PLANE,
                  stride_xm, stride_wk, stride_ym, M_BUCKET,
                  BITS: tl.constexpr, HAS_PERM: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_FP32: tl.constexpr,
                  SPLIT_K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    band = GROUP_M * num_n  # programs per band of GROUP_M m blocks
    first_m = (pid // band) * GROUP_M
    rows_in_band = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % band) % rows_in_band
    pid_n = (pid % band) // rows_in_band
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm  # (BM, 1)
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    R: tl.constexpr = 1 if BITS == 3 else BITS
    BKW: tl.constexpr = BLOCK_K // V  # word rows per tile
    row = tl.arange(0, BKW)
    cols = slab_columns(BITS, BLOCK_K)  # (BK,): x's columns in the order the dequantized tile's rows come
    t_start, t_end = split_tiles(K, pid_k, SPLIT_K, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(t_start, t_end):
        k0 = t * BLOCK_K
        offs_k = tl.max_contiguous(tl.multiple_of(k0 + cols, R), R)  # runs of R consecutive columns
        if HAS_PERM:
            src = tl.load(perm_ptr + offs_k, mask=offs_k < K, other=0)
        else:
            src = offs_k
        rows = t * BKW + row
        w_ptrs = w_ptr + rows[:, None] * stride_wk + offs_n[None, :]  # (BKW, BN)
        if EVEN_K:
            x = tl.load(x_rows + src[None, :], mask=m_mask[:, None], other=0.0)  # (BM, BK)
            wmask = n_mask[None, :]
        else:
            x = tl.load(x_rows + src[None, :], mask=m_mask[:, None] & (offs_k < K)[None, :], other=0.0)
            wmask = (rows < KW)[:, None] & n_mask[None, :]
        f = slab_tile(w_ptrs, wmask, PLANE, BITS, BLOCK_K)  # (BK, BN), rows in the order of cols
        s, z = scale_zero(tl.load(sz_ptr + (k0 // GROUP).to(tl.int64) * N + offs_n, mask=n_mask, other=0))
        w = f * (s * (1 << BITS))[None, :] - (((1 << BITS) + z) * s)[None, :]  # (BK, BN) = (q - z) * s
        if DOT_FP32:
            acc = tl.dot(x.to(tl.float32), w, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w.to(x.dtype), acc)  # (BM, BN)
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        acc += tl.where(pid_k == 0, b, 0.0)[None, :]  # once, by the first split
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    out = acc.to(y_ptr.dtype.element_ty)
    mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptrs, out, mask=mask)
    else:
        tl.atomic_add(y_ptrs, out, mask=mask, sem="relaxed")


def _bucket_list(table: dict, bucket: int):
    return table[min(b for b in table if b >= bucket)]


def fitted_configs(base: list[tuple], nargs: dict, splits: tuple[int, ...] = (1,)) -> list[triton.Config]:
    """Fit each (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) to this weight and M, add SPLIT_K, drop duplicates."""
    m, n, k, bits, group = nargs["M"], nargs["N"], nargs["K"], nargs["BITS"], nargs["GROUP"]
    device = nargs["x_ptr"].device
    sms = sm_count(device)
    out, seen = [], set()
    for bm, bn, bk, warps, stages in base:
        bk = fit_block_k(bk, group_size=group, in_features=k, bits=bits, minimum=32)
        bm = min(bm, max(triton.next_power_of_2(m), 16))
        bn = min(bn, max(triton.next_power_of_2(n), 16))
        k_tiles = triton.cdiv(k, bk)
        programs = triton.cdiv(m, bm) * triton.cdiv(n, bn)
        small = m_bucket(m) <= SPLIT_UP_TO and device.type == "cuda"
        base_split = split_k(programs, k_tiles, sms) if small else 1
        for mult in splits if small else (1,):
            split = min(base_split * mult, k_tiles)
            key = (bm, bn, bk, warps, stages, split)
            if key not in seen:
                seen.add(key)
                out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split,
                                          "EVEN_K": k % bk == 0},
                                         num_warps=warps, num_stages=stages,
                                         pre_hook=zero_output if split > 1 else None))
    return out


def _prune(configs, nargs, **kwargs):
    args = {**nargs, **kwargs}
    base = _bucket_list(FULL, args["M_BUCKET"])
    return fitted_configs(base, args, splits=(1, 2))


_KEY = ["M_BUCKET", "N", "K", "GROUP", "BITS", "HAS_PERM", "HAS_BIAS"]
# every FULL entry once; the pruner keeps the M bucket's own list
_tuned = triton.autotune(
    [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
     for configs in FULL.values() for bm, bn, bk, w, s in configs],
    key=_KEY, prune_configs_by={"early_config_prune": _prune})(_qgemm_kernel)


def _grid(m: int, n: int):
    return lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])


def qgemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, *, bits: int,
          group_size: int, in_features: int, perm: torch.Tensor | None = None, bias: torch.Tensor | None = None,
          split_k: int | None = None, config: dict | None = None, autotune: str | None = None,
          poison: bool = False) -> torch.Tensor:
    """y [M, N] = x[:, perm] @ W.T + bias for x [M, K]; operands canonical or the GPU layout (as qgemv).

    `split_k` / `config` ({"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"}) pin a launch; otherwise
    autotune mode "small" launches the M bucket's default config and "full" benchmarks the bucket's list once
    per key. `poison=True` fills y with NaN first (split-K zeroes it before adding).
    """
    y, args = launch_args("qgemm", x, qweight, scales, zeros, perm, bias, bits=bits, group_size=group_size,
                          in_features=in_features, poison=poison)
    if y.numel() == 0:
        return y
    m, n = y.shape
    args.update(M_BUCKET=m_bucket(m), GROUP_M=GROUP_M,
                DOT_FP32=x.dtype == torch.float32 or (interpreting() and x.dtype == torch.bfloat16))
    if split_k is None and config is None and autotune_mode(autotune) == "full":
        _tuned[_grid(m, n)](**args)
        return y
    cfg = dict(config or {})
    default = _bucket_list(SMALL, m_bucket(m))
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
    base = tuple(cfg.get(name, d) for name, d in zip(names, default, strict=True))
    chosen = fitted_configs([base], args)[0]
    meta = pinned_meta(chosen, split_k, y)
    _qgemm_kernel[_grid(m, n)(meta)](**args, **meta, num_warps=chosen.num_warps, num_stages=chosen.num_stages)
    return y

