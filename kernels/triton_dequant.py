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

import os

import triton
import triton.language as tl

ONE_F32_BITS = 0x3F800000  # the bits of 1.0f
# Compiled kernels spell (t & mask) | 1.0f as one lop3: ptxas 12.x (Triton 3.6's) splits the two constants over
# two instructions on the integer pipe, which bounds the GEMV. The interpreter cannot run PTX: plain ops there.
_LOP3 = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def and_or(t, MASK: tl.constexpr, other):
    """(t & MASK) | other on int32 tensors: one lop3 in compiled kernels."""
    if _LOP3:
        return tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r",
                                         [t, tl.full(t.shape, MASK, tl.int32), other], dtype=tl.int32,
                                         is_pure=True, pack=1)
    return (t & MASK) | other


@triton.jit
def mask_or_one(t, MASK: tl.constexpr):
    """(t & MASK) | bits of 1.0f, read as fp32."""
    return and_or(t, MASK, tl.full(t.shape, 0x3F800000, tl.int32)).to(tl.float32, bitcast=True)


@triton.jit
def shift_to(w, SHIFT):
    """w << SHIFT, or w >> -SHIFT when SHIFT < 0 (SHIFT constant, or a tensor of per-register constants)."""
    return tl.where(SHIFT >= 0, w << tl.maximum(SHIFT, 0), w >> tl.maximum(-SHIFT, 0))


@triton.jit
def split_tiles(K, pid_k, SPLIT_K, BLOCK_K: tl.constexpr):
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
    return mask_or_one(t, ((1 << BITS) - 1) << (23 - BITS))


@triton.jit
def _to_bit(w, src: tl.constexpr, dst: tl.constexpr):
    """w with bit `src` moved to bit `dst` (every other bit moved alike: the caller masks)."""
    if dst >= src:
        return w << (dst - src)
    return w >> (src - dst)


@triton.jit
def chunk_field(p0, p1, p2, f: tl.constexpr):
    """1 + q / 8 (fp32) for value f of a 3-bit chunk (kernels/triton_layout.py): ten fields a plane, values 30
    and 31 from the planes' top bits."""
    if f < 30:
        if f < 10:
            w = p0
        elif f < 20:
            w = p1
        else:
            w = p2
        return mask_or_one(_to_bit(w, 3 * (f % 10), 20), 0x700000)  # the field -> mantissa bits 20..22
    one = tl.full(p0.shape, 0x3F800000, tl.int32)
    if f == 30:  # u: P0 bits 30..31 and P1 bit 30
        bits = and_or(_to_bit(p1, 30, 22), 0x400000, and_or(_to_bit(p0, 30, 20), 0x300000, one))
    else:  # v: P1 bit 31 and P2 bits 30..31
        bits = and_or(_to_bit(p2, 30, 21), 0x600000, and_or(_to_bit(p1, 31, 20), 0x100000, one))
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def scale_zero(sz):
    """(scale, zero) fp32 from the packed int32 words of kernels.triton_layout.pack_scales."""
    s = (sz & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    z = (sz >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return s, z


@triton.jit
def slab_tile(w_ptrs, mask, PLANE, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """[BLOCK_K, BN] fp32 of 1 + q / 2**BITS, row j holding field j // BKW of word row j % BKW, BKW = BLOCK_K / V.

    w_ptrs [BKW, BN] point at the tile's word rows (3 bits: plane P0's; P1 and P2 sit PLANE and 2 PLANE further),
    each loaded once; the V fields of each word are taken in registers (every shift a constant), so row j of
    the result is the value at column 32 (r // R) + R (j // BKW) + r % R of the tile, r = j % BKW (the caller
    gathers x in that order: kernels/triton_layout.py deals each chunk round-robin over its R word rows).
    """
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    fld = tl.arange(0, V)[:, None, None]  # (V, 1, 1)
    if BITS == 3:
        p0 = tl.load(w_ptrs, mask=mask, other=0)[None, :, :]
        p1 = tl.load(w_ptrs + PLANE, mask=mask, other=0)[None, :, :]
        p2 = tl.load(w_ptrs + 2 * PLANE, mask=mask, other=0)[None, :, :]
        w = tl.where(fld < 10, p0, tl.where(fld < 20, p1, p2))  # (V, BKW, BN): the plane of fields 0 .. 29
        one = tl.full(w.shape, 0x3F800000, tl.int32)
        regular = and_or(shift_to(w, 20 - 3 * (fld % 10)), 0x700000, one)
        u = and_or(shift_to(p1, -8), 0x400000, and_or(shift_to(p0, -10), 0x300000, one))
        v = and_or(shift_to(p2, -9), 0x600000, and_or(shift_to(p1, -11), 0x100000, one))
        f = tl.where(fld < 30, regular, tl.where(fld == 30, u, v)).to(tl.float32, bitcast=True)
    else:
        w = tl.load(w_ptrs, mask=mask, other=0)[None, :, :]
        f = mask_or_one(shift_to(w, (23 - BITS) - fld * BITS), ((1 << BITS) - 1) << (23 - BITS))  # (V, BKW, BN)
    return tl.reshape(f, (BLOCK_K, w_ptrs.shape[1]))


@triton.jit
def slab_columns(BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """[BLOCK_K]: the tile column (from the tile's start) of each row of slab_tile's result."""
    V: tl.constexpr = 32 if BITS == 3 else 32 // BITS
    R: tl.constexpr = 1 if BITS == 3 else BITS
    BKW: tl.constexpr = BLOCK_K // V
    j = tl.arange(0, BLOCK_K)
    r = j % BKW
    return (r // R) * 32 + (j // BKW) * R + r % R
