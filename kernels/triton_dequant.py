"""Shared Triton pieces of the two dequant-matmuls: K tiles of a split, and the GPU words (kernels/triton_layout.py)
turned into values with no int->float conversion.

Dequantizing without a conversion instruction: a field q of b bits placed at the top of an fp32 mantissa
under the exponent of 1.0 reads as f = 1 + q / 2**b exactly (one shift and one mask-or on the word, where a
conversion instruction issues at 1/8 of the FMA rate on Hopper). The kernels fold the 1 and the 2**b into
each group's constants:

    (q - z) * s  =  f * a + c   with   a = 2**b * s,   c = -(2**b + z) * s

so dequantizing is one FMA (GEMM), or, summed against x, sum_k f x_k * a + c * sum_k x_k (GEMV).

    fp32 bits:  [sign | exponent 0x7F | q (b bits) | 0 ...]  ->  1 + q / 2**b
"""

from __future__ import annotations

import triton
import triton.language as tl

ONE_F32_BITS = 0x3F800000  # the bits of 1.0f


@triton.jit
def split_tiles(K, pid_k, SPLIT_K: tl.constexpr, BLOCK_K: tl.constexpr):
    """[t_start, t_end): the K tiles program pid_k of SPLIT_K walks (whole tiles, the last split may be short)."""
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(k_tiles, SPLIT_K)
    t_start = pid_k * per_split
    return t_start, tl.minimum(t_start + per_split, k_tiles)


@triton.jit
def word_field(w, i: tl.constexpr, BITS: tl.constexpr):
    """1 + q / 2**BITS (fp32) where q is field i (bits [BITS*i, BITS*(i+1))) of the int32 words w (2/4/8 bits)."""
    SHIFT: tl.constexpr = 23 - BITS - BITS * i  # from the field's place to the top of the mantissa
    if SHIFT >= 0:
        t = w << SHIFT
    else:
        t = w >> (-SHIFT)
    MASK: tl.constexpr = ((1 << BITS) - 1) << (23 - BITS)
    return ((t & MASK) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def chunk_field(a, b, h, i: tl.constexpr):
    """1 + q / 8 (fp32) for value i of a 3-bit chunk: low bits from plane A (i < 16) or B, the high bit from H."""
    if i < 16:
        lo = a
    else:
        lo = b
    LO_SHIFT: tl.constexpr = 20 - 2 * (i % 16)  # low two bits -> mantissa bits 20..21 (1/8 and 1/4)
    if LO_SHIFT >= 0:
        lo = lo << LO_SHIFT
    else:
        lo = lo >> (-LO_SHIFT)
    HI_SHIFT: tl.constexpr = 22 - i  # high bit -> mantissa bit 22 (1/2)
    if HI_SHIFT >= 0:
        hi = h << HI_SHIFT
    else:
        hi = h >> (-HI_SHIFT)
    return ((lo & 0x300000) | (hi & 0x400000) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def _repeat(w, LOG2: tl.constexpr):
    """Each element of w repeated 2**LOG2 times in place along the last axis (in registers, no reload)."""
    if LOG2 >= 1:
        w = tl.interleave(w, w)
    if LOG2 >= 2:
        w = tl.interleave(w, w)
    if LOG2 >= 3:
        w = tl.interleave(w, w)
    if LOG2 >= 4:
        w = tl.interleave(w, w)
    if LOG2 >= 5:
        w = tl.interleave(w, w)
    return w


@triton.jit
def mantissa_tile(w_rows, offs_w, mask, PLANE, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """[BN, BLOCK_K] fp32 of 1 + q / 2**BITS for the K tile whose word columns are offs_w [BLOCK_K / V].

    w_rows [BN, 1] are row pointers, mask [BN, BLOCK_K / V] the valid words; each word is loaded once and
    repeated in registers (tl.interleave), then every element shifts its own field up.
    """
    kk = tl.arange(0, BLOCK_K)
    if BITS == 3:
        a = tl.load(w_rows + offs_w[None, :], mask=mask, other=0)
        b = tl.load(w_rows + PLANE + offs_w[None, :], mask=mask, other=0)
        h = tl.load(w_rows + 2 * PLANE + offs_w[None, :], mask=mask, other=0)
        lo = _repeat(tl.interleave(a, b), 4)  # (BN, BK): A[c] for 32c + 0..15, B[c] for 32c + 16..31
        hi = _repeat(h, 5)  # (BN, BK)
        lo = ((lo >> ((kk % 16) * 2)[None, :]) & 3) << 20
        hi = ((hi >> (kk % 32)[None, :]) & 1) << 22
        bits = lo | hi | 0x3F800000
    else:
        V: tl.constexpr = 32 // BITS
        LOG2V: tl.constexpr = 5 - (BITS + 4) // 4  # log2(V): 2 -> 4, 4 -> 3, 8 -> 2
        w = _repeat(tl.load(w_rows + offs_w[None, :], mask=mask, other=0), LOG2V)  # (BN, BK)
        q = (w >> ((kk % V) * BITS)[None, :]) & ((1 << BITS) - 1)
        bits = (q << (23 - BITS)) | 0x3F800000
    return bits.to(tl.float32, bitcast=True)
