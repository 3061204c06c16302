"""Fused dequant-GEMV for decode: y [M, N] = x [M, K] @ W.T for a few rows (M <= triton_ops.GEMV_MAX_M), on CUDA cores.

Shape contract: x fp16/bf16/fp32 [M, K] (last dim contiguous); words int32 [W, N] and sz int32 [K // G, N]
(kernels/triton_layout.py); perm int32 [K] or None (act-order: y = x[:, perm] @ W.T, gathered in the kernel);
bias [N] or None; y [M, N] in x's dtype, accumulated in fp32.

Program (n block, k split, row m) walks its share of K in tiles of BLOCK_K values that sit inside one group:
    - the tile's words [BLOCK_K / V, BLOCK_N] load once, each word row's N columns contiguous (coalesced,
      16-byte vectors);
    - the group's scales and zeros load once per tile, one int32 [BLOCK_N] vector in the words' column layout;
    - for each field i of a word (unrolled) 1 + q / 2**b (kernels/triton_dequant.py: no conversion
      instruction) times the x value of its column accumulates into a [BLOCK_K / V, BLOCK_N] fp32 tile,
      which the group's a = 2**b s and c = -(2**b + z) s scale once per word;
    - one reduction across the word rows at the end.
Split-K programs add their rows into a zeroed y with one atomic add in y's dtype (the config's pre-hook
zeroes y): one pass, no partial buffer and no second kernel. Row offsets are 64-bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_config import (
    autotune_mode,
    fit_block_k,
    launch_args,
    pinned_meta,
    sm_count,
    split_k,
    zero_output,
)
from kernels.triton_dequant import chunk_field, scale_zero, split_tiles, word_field

# (BLOCK_N, BLOCK_K, num_warps, num_stages); BLOCK_K is cut to the group (triton_config.fit_block_k)
SMALL = [(128, 128, 4, 2)]  # also the pinned launch's default
# Wide N blocks give each thread 4-8 columns, so one x value serves that many weights; the split-K heuristic
# then fills the GPU (~4 programs an SM). Static costs per config: python -m kernels.triton_sass.
FULL = [(1024, 32, 4, 2), (2048, 32, 8, 2), (512, 32, 4, 2), (512, 64, 4, 2), (256, 32, 2, 2), (256, 64, 4, 2),
        (128, 128, 4, 2), (64, 128, 2, 2)]


@triton.jit
def _load_tile(w_ptr, sz_ptr, t, row, offs_n, n_mask, last_row, N, GROUP, PLANE, stride_wk,
               BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Tile t's words [BLOCK_K / V, BLOCK_N] (three planes at 3 bits; the first repeated otherwise) and its group's
    scale/zero words, shaped like the word tile (every row the same addresses) so they load in its register
    layout: a [BLOCK_N] load took another layout and a shuffle through shared memory. Rows at or past
    last_row read as zero, without a memory access."""
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    BKW: tl.constexpr = BLOCK_K // V
    rows = t * BKW + row  # (BKW,)
    mask = (rows < last_row)[:, None] & n_mask[None, :]
    w_ptrs = w_ptr + rows.to(tl.int64)[:, None] * stride_wk + offs_n[None, :]  # (BKW, BN)
    wa = tl.load(w_ptrs, mask=mask, other=0)
    if BITS == 3:
        wb = tl.load(w_ptrs + PLANE, mask=mask, other=0)  # planes P1 and P2 (wa is P0)
        wh = tl.load(w_ptrs + 2 * PLANE, mask=mask, other=0)
    else:
        wb = wa
        wh = wa
    sz_ptrs = sz_ptr + ((t * BLOCK_K) // GROUP).to(tl.int64) * N + (offs_n[None, :] + 0 * row[:, None])
    return wa, wb, wh, tl.load(sz_ptrs, mask=mask, other=0)


# one binary for every split and M: SPLIT_K == 1 picks a plain store at run time
@triton.jit(do_not_specialize=["M", "GROUP", "SPLIT_K"])
def _qgemv_kernel(x_ptr, w_ptr, sz_ptr, perm_ptr, bias_ptr, y_ptr, M, N, K, GROUP, KW, PLANE,
                  stride_xm, stride_wk, stride_ym,
                  BITS: tl.constexpr, HAS_PERM: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS  # fields per word
    R: tl.constexpr = 1 if BITS == 3 else BITS  # word rows per chunk of 32 values
    BKW: tl.constexpr = BLOCK_K // V  # word rows per tile
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    n_mask = offs_n < N
    x_row = x_ptr + pid_m.to(tl.int64) * stride_xm
    row = tl.arange(0, BKW)
    k_of_row = (row // R) * 32 + row % R  # (BKW,): field 0's column of each word row, from the tile start
    t_start, t_end = split_tiles(K, pid_k, SPLIT_K, BLOCK_K)
    last_row = tl.minimum(t_end * BKW, KW)  # rows at or past this are another split's (or past the weight)
    acc = tl.zeros((BKW, BLOCK_N), dtype=tl.float32)
    # software prefetch: the next tile's words are in flight while this one is computed (the loop's loads
    # feed no tl.dot, so Triton's pipeliner leaves them alone and only other warps would hide the latency)
    wa, wb, wh, szw = _load_tile(w_ptr, sz_ptr, t_start, row, offs_n, n_mask, last_row, N, GROUP, PLANE, stride_wk,
                                 BITS, BLOCK_K)
    for t in range(t_start, t_end):
        k0 = t * BLOCK_K
        na, nb, nh, nsz = _load_tile(w_ptr, sz_ptr, t + 1, row, offs_n, n_mask, last_row, N, GROUP, PLANE,
                                     stride_wk, BITS, BLOCK_K)
        s, z = scale_zero(szw)
        part = tl.zeros((BKW, BLOCK_N), dtype=tl.float32)
        xs = tl.zeros((BKW,), dtype=tl.float32)
        for i in tl.static_range(V):
            kk = tl.max_contiguous(tl.multiple_of(k0 + k_of_row + i * R, R), R)  # (BKW,): field i's columns
            if HAS_PERM:
                src = tl.load(perm_ptr + kk, mask=kk < K, other=0)
            else:
                src = kk
            if EVEN_K:
                xi = tl.load(x_row + src).to(tl.float32)
            else:
                xi = tl.load(x_row + src, mask=kk < K, other=0.0).to(tl.float32)
            if BITS == 3:
                f = chunk_field(wa, wb, wh, i)
            else:
                f = word_field(wa, i, BITS)
            part += f * xi[:, None]  # (BKW, BN)
            xs += xi
        # f * a + c = (q - z) * s with a = 2**b s and c = -(2**b + z) s, applied once per word
        acc += part * (s * (1 << BITS))
        acc += xs[:, None] * (-((1 << BITS) + z) * s)
        wa, wb, wh, szw = na, nb, nh, nsz
    y = tl.sum(acc, axis=0)  # (BN,)
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        y += tl.where(pid_k == 0, b, 0.0)  # once, by the first split
    y_ptrs = y_ptr + pid_m.to(tl.int64) * stride_ym + offs_n
    out = y.to(y_ptr.dtype.element_ty)
    if SPLIT_K == 1:
        tl.store(y_ptrs, out, mask=n_mask)
    else:
        tl.atomic_add(y_ptrs, out, mask=n_mask, sem="relaxed")


def fitted_configs(base: list[tuple], nargs: dict, splits: tuple[int, ...] = (1,)) -> list[triton.Config]:
    """Fit each (BLOCK_N, BLOCK_K, warps, stages) to this weight, add SPLIT_K (x `splits`), drop duplicates."""
    n, k, m, bits, group = nargs["N"], nargs["K"], nargs["M"], nargs["BITS"], nargs["GROUP"]
    device = nargs["x_ptr"].device
    sms = sm_count(device)
    out, seen = [], set()
    for bn, bk, warps, stages in base:
        bk = fit_block_k(bk, group_size=group, in_features=k, bits=bits, minimum=32)
        bn = min(bn, max(triton.next_power_of_2(n), 16))
        k_tiles = triton.cdiv(k, bk)
        # off CUDA (the interpreter) one program at a time gains nothing from splitting: tests pin split_k
        base_split = split_k(triton.cdiv(n, bn) * m, k_tiles, sms) if device.type == "cuda" else 1
        for mult in splits:
            split = min(base_split * mult, k_tiles)
            key = (bn, bk, warps, stages, split)
            if key not in seen:
                seen.add(key)
                out.append(triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "EVEN_K": k % bk == 0},
                                         num_warps=warps,
                                         num_stages=stages, pre_hook=zero_output if split > 1 else None))
    return out


def _prune(configs, nargs, **kwargs):
    base = [(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages) for c in configs]
    return fitted_configs(base, {**nargs, **kwargs}, splits=(1, 2))


_KEY = ["M", "N", "K", "GROUP", "BITS", "HAS_PERM", "HAS_BIAS"]
_tuned = triton.autotune([triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                          for bn, bk, w, s in FULL], key=_KEY, prune_configs_by={"early_config_prune": _prune})(
    _qgemv_kernel)


def qgemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, *, bits: int,
          group_size: int, in_features: int, perm: torch.Tensor | None = None, bias: torch.Tensor | None = None,
          split_k: int | None = None, config: dict | None = None, autotune: str | None = None,
          poison: bool = False) -> torch.Tensor:
    """y [M, N] = x[:, perm] @ W.T + bias for x [M, K].

    qweight, scales, zeros: canonical (uint8 [N, packed_cols], fp16 [N, K // G] twice), or the GPU layout
    (words int32 [W, N], sz int32 [K // G, N], None): kernels/triton_layout.py.

    `split_k` / `config` ({"BLOCK_N", "BLOCK_K", "num_warps", "num_stages"}) pin a launch (tests, benchmarks);
    otherwise autotune mode "small" launches the default config (split-K by triton_config.split_k) and "full"
    benchmarks the FULL list once per key. `poison=True` fills y with NaN first: with one program along K an
    element no program writes stays NaN (split-K zeroes y before adding).
    """
    y, args = launch_args("qgemv", x, qweight, scales, zeros, perm, bias, bits=bits, group_size=group_size,
                          in_features=in_features, poison=poison)
    if y.numel() == 0:
        return y
    m, n = y.shape
    if split_k is None and config is None and autotune_mode(autotune) == "full":
        _tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"], m)](**args)
        return y
    cfg = dict(config or {})
    base = (cfg.get("BLOCK_N", SMALL[0][0]), cfg.get("BLOCK_K", SMALL[0][1]), cfg.get("num_warps", SMALL[0][2]),
            cfg.get("num_stages", SMALL[0][3]))
    chosen = fitted_configs([base], args)[0]
    meta = pinned_meta(chosen, split_k, y)
    _qgemv_kernel[(triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"], m)](
        **args, **meta, num_warps=chosen.num_warps, num_stages=chosen.num_stages)
    return y
