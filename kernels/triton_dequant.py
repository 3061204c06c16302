"""The shared Triton device function that unpacks and dequantizes a tile of the canonical packed weight.

Layouts are those of kernels.pack (drawn there); W[n, k] = (q[n, k] - zeros[n, k // G]) * scales[n, k // G].
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_dequant_tile(q_ptr, s_ptr, z_ptr, offs_k, offs_n, K, N, stride_qn, stride_sn,
                      BITS: tl.constexpr, GROUP: tl.constexpr):
    """fp32 tile of W.T: [BLOCK_K, BLOCK_N] for columns offs_k and rows offs_n (masked to 0 outside)."""
    k2 = offs_k[:, None]  # (BK, 1)
    n2 = offs_n[None, :]  # (1, BN)
    mask = (k2 < K) & (n2 < N)
    row = q_ptr + n2 * stride_qn
    if BITS == 8:
        q = tl.load(row + k2, mask=mask, other=0).to(tl.int32)
    elif BITS == 4:
        b = tl.load(row + k2 // 2, mask=mask, other=0).to(tl.int32)
        q = (b >> ((k2 % 2) * 4)) & 0xF
    elif BITS == 2:
        b = tl.load(row + k2 // 4, mask=mask, other=0).to(tl.int32)
        q = (b >> ((k2 % 4) * 2)) & 0x3
    else:  # 3 bits: a little-endian 24-bit word in bytes 3g .. 3g + 2 holds 8 values
        base = row + (k2 // 8) * 3
        word = (tl.load(base, mask=mask, other=0).to(tl.int32)
                | (tl.load(base + 1, mask=mask, other=0).to(tl.int32) << 8)
                | (tl.load(base + 2, mask=mask, other=0).to(tl.int32) << 16))
        q = (word >> ((k2 % 8) * 3)) & 0x7
    g = k2 // GROUP
    s = tl.load(s_ptr + n2 * stride_sn + g, mask=mask, other=0).to(tl.float32)
    z = tl.load(z_ptr + n2 * stride_sn + g, mask=mask, other=0).to(tl.float32)
    return (q.to(tl.float32) - z) * s
