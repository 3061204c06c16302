"""PyTorch's native CPU low-bit matmuls, with exact conversions to and from the canonical packed format.

    cpu-int4pack  aten._weight_int4pack_mm_for_cpu(x_bf16, w_native [N, K/2], G', scale_and_zero [K/G', N, 2])
                  computes w = (q - 8) * scale + zero, so zero = (8 - zeros) * scales for our (q - zeros) * scales.
                  G' must be 32/64/128/256: a larger group (per channel included) is repeated into G' = 256 ... 32.
    cpu-int8pack  aten._weight_int8pack_mm(x_bf16, w_int8 [N, K], scale [N]), per channel only (G = K),
                  K a multiple of 16.
                  q - zeros = (q - 128) + (128 - zeros), so an asymmetric zero folds into a rank-1 term:
                  y += rowsum(x) * (128 - zeros) * scales.

Both take bf16 activations: their fp32 paths measured 4-40x slower on this machine (docs/benchmarks.md).
Scales enter in bf16 (from fp16), so results differ from the fp32 reference by bf16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT4PACK, INT8PACK = "cpu-int4pack", "cpu-int8pack"
_INT4_GROUPS = (256, 128, 64, 32)


@dataclass
class NativeWeight:
    """Runtime-only tensors of a native layout (never saved); qweight itself lives in the module."""

    kind: str  # INT4PACK | INT8PACK
    scale: torch.Tensor  # int4: scale_and_zero bf16 [K/G', N, 2]; int8: scales bf16 [N]
    offset: torch.Tensor | None = None  # int8: fp32 [N] rank-1 zero correction, None when zeros == 128
    group_size: int = 0  # int4: native group size G'


def _has(op: str) -> bool:
    return hasattr(torch.ops.aten, op)


def native_kind(bits: int, group_size: int, in_features: int, out_features: int) -> str | None:
    """The native CPU layout that can run this weight, or None."""
    if bits == 4 and _has("_weight_int4pack_mm_for_cpu") and out_features % 32 == 0 and in_features % 2 == 0:
        if any(group_size % g == 0 for g in _INT4_GROUPS):
            return INT4PACK
    # _weight_int8pack_mm reads K in blocks of 16 and segfaults (SIGSEGV, nothing to catch) when
    # K % 16 != 0 (torch 2.13: K = 8, 24, 40, 100 crash; 16, 48, 64, 96 run): such layers take the reference.
    if bits == 8 and group_size == in_features and in_features % 16 == 0 and _has("_weight_int8pack_mm"):
        return INT8PACK
    return None


# --- int4pack layout -----------------------------------------------------------------------------
# _convert_weight_to_int4pack_for_cpu(q [N, K], 1) splits N greedily into row blocks of 64, then 32, then 16.
# Within a block of B rows the block is stored K-major (flat index k * B + j); the two nibbles of a byte
# hold rows (j, j + 32) for B = 64 and rows (2j, 2j + 1) for B = 32 or 16, low nibble first. Read off
# torch 2.13; `to_int4pack` checks the inverse on every weight and refuses to replace the canonical
# copy when it does not hold, so a changed layout costs speed, never correctness.

def _row_blocks(n: int) -> list[tuple[int, int]]:
    blocks, start = [], 0
    for b in (64, 32, 16):
        while n - start >= b:
            blocks.append((start, b))
            start += b
    return blocks if start == n else []


def from_int4pack(native: torch.Tensor, in_features: int) -> torch.Tensor:
    """Native int4pack uint8 [N, K/2] -> canonical kernels.pack 4-bit uint8 [N, K/2] (exact)."""
    n = native.shape[0]
    out = torch.empty_like(native)
    flat = native.reshape(-1)
    for start, b in _row_blocks(n):
        blk = flat[start * in_features // 2:(start + b) * in_features // 2].reshape(in_features, b // 2)  # (K, B/2)
        lo, hi = blk & 0xF, blk >> 4
        if b == 64:
            rows = torch.cat([lo, hi], dim=1)  # (K, 64): rows j and j + 32
        else:
            rows = torch.stack([lo, hi], dim=2).reshape(in_features, b)  # (K, B): rows 2j and 2j + 1
        q = rows.T  # (B, K)
        out[start:start + b] = q[:, 0::2] | (q[:, 1::2] << 4)
    return out


def to_int4pack(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, group_size: int,
                in_features: int) -> tuple[torch.Tensor, NativeWeight] | None:
    """Canonical 4-bit -> (native uint8 [N, K/2], NativeWeight), or None when the layout inverse fails."""
    from kernels.pack import unpack_4bit_u8

    q = unpack_4bit_u8(qweight).to(torch.int32)  # (N, K)
    native = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    del q
    if native.shape != qweight.shape or not torch.equal(from_int4pack(native, in_features), qweight):
        return None
    g_native = next(g for g in _INT4_GROUPS if group_size % g == 0)
    rep = group_size // g_native
    s = scales.float().repeat_interleave(rep, dim=1)  # (N, K/G')
    z = ((8.0 - zeros.float()) * scales.float()).repeat_interleave(rep, dim=1)  # (N, K/G')
    sz = torch.stack([s, z], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # (K/G', N, 2)
    return native, NativeWeight(INT4PACK, sz, None, g_native)


def int4pack_mm(x: torch.Tensor, native: torch.Tensor, nw: NativeWeight) -> torch.Tensor:
    """x [..., K] -> y [..., N] in x's dtype, computed with bf16 activations."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k).to(torch.bfloat16).contiguous()  # the op needs a contiguous A; a slice may not be
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, native, nw.group_size, nw.scale)  # (M, N)
    return y.to(x.dtype).reshape(*lead, -1)


# --- int8pack layout: q - 128 as int8 ----------------------------------------------------------------

def to_int8pack(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, NativeWeight]:
    """Canonical 8-bit per-channel uint8 [N, K] -> (int8 [N, K], NativeWeight); `from_int8pack` inverts it.

    A new tensor (q ^ 0x80 == q - 128 as int8), never qweight modified in place: a state dict or any
    other reference taken before the first forward must keep the canonical values. The module drops
    its canonical copy when it adopts this one, so the extra memory is one layer's, for a moment.
    """
    w8 = (qweight ^ 0x80).view(torch.int8)
    s = scales.float().reshape(-1)  # (N,)
    z = zeros.float().reshape(-1)
    offset = None if bool((z == 128).all()) else (128.0 - z) * s  # (N,)
    return w8, NativeWeight(INT8PACK, s.to(torch.bfloat16), offset)


def from_int8pack(w8: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_int8pack` (a new tensor): int8 [N, K] -> canonical uint8 [N, K]."""
    return w8.view(torch.uint8) ^ 0x80


def int8pack_mm(x: torch.Tensor, w8: torch.Tensor, nw: NativeWeight) -> torch.Tensor:
    """x [..., K] -> y [..., N] in x's dtype, computed with bf16 activations plus the fp32 zero correction."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)  # (M, K)
    y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), w8, nw.scale).float()  # (M, N)
    if nw.offset is not None:
        y = y + x2.float().sum(dim=-1, keepdim=True) * nw.offset  # rank-1 zero term
    return y.to(x.dtype).reshape(*lead, -1)
