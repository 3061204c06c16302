"""PyTorch's native CPU low-bit matmuls: the runtime layouts they read, exact conversions, and the math around them.

    cpu-int4pack  aten._weight_int4pack_mm_for_cpu(x_bf16, w_native [N, K/2], G', scale_and_zero [K/G', N, 2])
                  computes w = (q - 8) * scale + zero, so zero = (8 - zeros) * scales for our (q - zeros) * scales.
                  G' must be 32/64/128/256: a larger group (per channel included) is repeated into G' = 256 ... 32.
                  2- and 3-bit weights are unpacked once into this layout (their q fit in a nibble).
    cpu-int8pack  aten._weight_int8pack_mm(x_bf16, w_int8 [N, K], scale [N]), per channel only (G = K),
                  K a multiple of 16.
    cpu-dequant-bf16  the weight dequantized to bf16, then one dense bf16 matmul (prefill: wins from some M on).
    cpu-fp8-fp16  FP8 E4M3 weights held as fp16 (exactly, times 2**-8) for torch's fp16 GEMV with fp32
                  accumulation; from M = 4 the fp16 copy is cast to fp32 for an fp32 matmul ("cpu-fp8-fp32").

Both kernels take bf16 activations (their fp32 paths measured 4-40x slower here) and round their output
to bf16. Scales enter in bf16 (from fp16), so results differ from the fp32 reference by bf16 rounding.

Asymmetric int8: q - zeros = (q - 128) + (128 - zeros) would leave a rank-1 correction to add after the
kernel, but the kernel has already rounded sum x * (q - 128) * s to bf16: when a row's zero is far from 128
that main term is large and cancels, and the rounding swamps the result (issue 20: 20 dB lost, 50 dB with
non-centred x). Centring x per row removes the term the zero would add:
    y = (x - mean(x)) @ W.T + mean(x) * W.sum(1),   and (x - mean(x)) @ (q - 128).T * s == (x - mean(x)) @ W.T,
so the bf16 rounding is bounded by |(x - mean) @ W.T|, as for a symmetric weight, whatever the zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT4PACK, INT8PACK, DEQUANT_BF16 = "cpu-int4pack", "cpu-int8pack", "cpu-dequant-bf16"
FP8_FP16, FP8_FP32 = "cpu-fp8-fp16", "cpu-fp8-fp32"
_INT4_GROUPS = (256, 128, 64, 32)


@dataclass
class NativeWeight:
    """Runtime-only tensors of a native layout (never saved); the packed weight itself lives in the module."""

    kind: str  # INT4PACK | INT8PACK
    scale: torch.Tensor  # int4: scale_and_zero bf16 [K/G', N, 2]; int8: scales bf16 [N]
    offset: torch.Tensor | None = None  # int8: 128 - zeros, fp32 [N]; None when every zero is 128
    group_size: int = 0  # int4: native group size G'
    row_sum: torch.Tensor | None = None  # int8 asymmetric: sum_k W[n, k], fp32 [N]


def _has(op: str) -> bool:
    return hasattr(torch.ops.aten, op)


def native_kind(bits: int, group_size: int, in_features: int, out_features: int) -> str | None:
    """The native CPU layout that can run this weight, or None."""
    if out_features == 0:
        return None
    if bits in (2, 3, 4) and _has("_weight_int4pack_mm_for_cpu") and out_features % 32 == 0 and in_features % 2 == 0:
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
                in_features: int, bits: int = 4) -> tuple[torch.Tensor, NativeWeight] | None:
    """Canonical 2/3/4-bit -> (native uint8 [N, K/2], NativeWeight), or None when the layout inverse fails.

    2- and 3-bit values are shifted to sit around the kernel's centre 8 (q + 6, q + 4; zeros likewise): the
    kernel's bf16 scale and zero then multiply |q - 8| <= 2**(bits-1), not up to 8, and keep the precision
    relative to a quantization step that 4-bit has (unshifted, 2-bit lost ~10 dB of SQNR).
    """
    from kernels.pack import pack_4bit_u8, unpack

    shift = 8 - 2 ** (bits - 1)
    q = unpack(qweight, bits, in_features).to(torch.int32) + shift  # (N, K), values in [shift, 15 - shift]
    zeros = zeros.float() + shift
    native = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    expected = qweight if bits == 4 else pack_4bit_u8(q)
    del q
    if native.shape != expected.shape or not torch.equal(from_int4pack(native, in_features), expected):
        return None
    g_native = next(g for g in _INT4_GROUPS if group_size % g == 0)
    rep = group_size // g_native
    s = scales.float().repeat_interleave(rep, dim=1)  # (N, K/G')
    z = ((8.0 - zeros.float()) * scales.float()).repeat_interleave(rep, dim=1)  # (N, K/G')
    sz = torch.stack([s, z], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # (K/G', N, 2)
    return native, NativeWeight(INT4PACK, sz, None, g_native)


# Dequantization writes the bf16 weight in chunks of about this many elements (1 MiB of fp32): a chunk's
# temporaries stay in cache. Whole-weight temporaries measured 2.5x slower on 4096x4096 (6-11 ns a weight).
DEQUANT_CHUNK = 1 << 18


def int4pack_dequant_t(native: torch.Tensor, nw: NativeWeight, in_features: int) -> torch.Tensor | None:
    """W.T bf16 [K, N] from the native layout, for N a multiple of 64 (one block shape); None otherwise.

    A 64-row block is K-major with rows (j, j + 32) in the nibbles of byte j, so its low and high nibbles,
    written side by side, are 64 consecutive columns of W.T: no transpose of the weight is needed.
    """
    n, k = native.shape[0], in_features
    if n % 64:
        return None
    blocks = native.view(n // 64, k, 32).transpose(0, 1)  # (K, N/64, 32)
    g = nw.group_size
    s = nw.scale[..., 0].float()  # (K/G', N)
    z = nw.scale[..., 1].float() - 8 * s  # (q - 8) * s + zero == q * s + z
    out = torch.empty(k // g, g, n, dtype=torch.bfloat16)  # (K/G', G', N) == W.T
    step = max(1, DEQUANT_CHUNK // (g * n))  # groups per chunk
    for g0 in range(0, k // g, step):
        b = blocks[g0 * g:(g0 + step) * g]
        q = torch.cat([b & 0xF, b >> 4], dim=2).view(-1, g, n).float()  # (groups, G', N)
        # fp32 arithmetic, one rounding to bf16: bf16 elementwise ops measured 2-3x slower here
        out[g0:g0 + step].copy_(q.mul_(s[g0:g0 + step, None]).add_(z[g0:g0 + step, None]))
    return out.view(k, n)


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
    if bool((z == 128).all()):
        return w8, NativeWeight(INT8PACK, s.to(torch.bfloat16))
    offset = 128.0 - z  # (N,)
    row_sum = ((w8.double().sum(dim=1) + offset.double() * w8.shape[1]) * s.double()).float()  # sum_k W[n, k]
    return w8, NativeWeight(INT8PACK, s.to(torch.bfloat16), offset, row_sum=row_sum)


def from_int8pack(w8: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_int8pack` (a new tensor): int8 [N, K] -> canonical uint8 [N, K]."""
    return w8.view(torch.uint8) ^ 0x80


def int8pack_mm(x2: torch.Tensor, w8: torch.Tensor, nw: NativeWeight) -> torch.Tensor:
    """x [M, K] -> y [M, N]: bf16 from a symmetric weight, fp32 from an asymmetric one (module docstring).

    A row of x that is not finite makes the centring meaningless (inf - inf); such calls take the
    dequantized weight, which gives the reference's infinities.
    """
    if nw.offset is None:
        xb = x2.bfloat16()
        return torch.ops.aten._weight_int8pack_mm(xb if xb.is_contiguous() else xb.contiguous(), w8, nw.scale)
    xf = x2.float()
    mean = xf.mean(dim=1, keepdim=True)  # (M, 1)
    if not torch.isfinite(mean.sum()):
        return torch.nn.functional.linear(x2.to(torch.bfloat16), int8pack_dequant(w8, nw))
    xc = (xf - mean).to(torch.bfloat16, memory_format=torch.contiguous_format)  # a transposed x stays transposed
    y = torch.ops.aten._weight_int8pack_mm(xc, w8, nw.scale)  # (M, N), bf16
    return torch.addcmul(y.float(), mean, nw.row_sum)  # + mean(x) * sum_k W[n, k]


def int8pack_dequant(w8: torch.Tensor, nw: NativeWeight) -> torch.Tensor:
    """W bf16 [N, K] = (q - zeros) * scales in fp32, rounded once (exact zeros stay zero for integer zeros)."""
    n, k = w8.shape
    out = torch.empty(n, k, dtype=torch.bfloat16)
    step = max(1, DEQUANT_CHUNK // max(k, 1))  # rows per chunk
    scale = nw.scale.float()[:, None]  # (N, 1)
    for r in range(0, n, step):
        w = w8[r:r + step].float()
        if nw.offset is not None:
            w.add_(nw.offset[r:r + step, None])
        out[r:r + step].copy_(w.mul_(scale[r:r + step]))
    return out


# --- FP8 E4M3 as fp16 --------------------------------------------------------------------------------
# Every float8_e4m3fn value times 2**-8 is an fp16 number: 3 mantissa bits fit fp16's 10, |v| <= 448 * 2**-8
# = 1.75 and the smallest subnormal 2**-9 * 2**-8 = 2**-17 is above fp16's 2**-24. The shift keeps the GEMV's
# fp16 output |sum_k x_k v_k| <= 1.75 * |x|_1 far from fp16's 65504 for ordinary activations; a call whose
# output is not finite anyway (x too large for fp16, or inf in x) is redone in fp32.
# Measured here (30 SmolLM2 layers, weights out of cache, M = 1): fp16 GEMV 2-3x faster than fp32 or bf16
# F.linear (torch's bf16 GEMV is no faster than fp32 on this CPU without AMX); from M = 4 the fp16 GEMM is
# the slow one (10x fp32 at M = 128), and casting fp16 to fp32 costs little, fp16 to bf16 a lot.
FP8_SHIFT = 2.0 ** -8
FP8_FP16_UNTIL = 4  # first M that takes the fp32 matmul


def fp8_to_fp16(weight: torch.Tensor, weight_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn [N, K] and fp32 scales [N] -> (fp16 [N, K] = weight * 2**-8 exactly, fp32 [N] = scale * 2**8)."""
    return weight.to(torch.float16).mul_(FP8_SHIFT), weight_scale.float().reshape(-1) / FP8_SHIFT


def fp8_fp16_mm(x2: torch.Tensor, w16: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, str]:
    """x [M, K] -> (y fp32 [M, N] = x @ (w16 * scale).T, path): the fp16 GEMV below FP8_FP16_UNTIL rows, else
    (and for any call whose fp16 result is not finite) the fp32 matmul on the exact fp32 weight values."""
    if x2.shape[0] < FP8_FP16_UNTIL:
        y = torch.nn.functional.linear(x2.half(), w16)  # (M, N) fp16, fp32 accumulation inside
        if torch.isfinite(y.sum(dtype=torch.float32)):
            return y.float().mul_(scale), FP8_FP16
    y = torch.nn.functional.linear(x2.float(), w16.float())  # (M, N)
    return y.mul_(scale), FP8_FP32
