"""The GPU runtime layout of a packed weight: int32 words along K, built once when a QuantLinear moves to CUDA.

    words: int32 [N, W]   row n holds q[n, :] as bit fields packed along K; a 4-byte load brings one output
                          row's next 32 / bits values, and a warp reading a row's consecutive words reads
                          consecutive addresses (coalesced, vectorisable where rows are 16-byte aligned).

2, 4 and 8 bits: V = 32 / bits values per word, word w holding q[n, V*w + i] in bits [bits*i, bits*(i+1)):

    4-bit word w:  bit 31 ...... 28 27 ...... 24  ...  7 ....... 4 3 ....... 0
                   [  q[8w + 7]   ][  q[8w + 6]  ] ... [  q[8w + 1] ][  q[8w]   ]

    This is kernels.pack's byte layout read as little-endian int32, so when a row's packed bytes are a whole
    number of words (packed_cols(K, bits) % 4 == 0) the words ARE qweight, viewed: no copy, no extra byte.
    Otherwise every row is padded with zero bytes to a whole word (a copy that replaces qweight).

3 bits: three planes of P = ceil(K / 32) words, [A | B | H] along each row (W = 3P); chunk c covers q[n, 32c : 32c + 32]:

    A[c] bits [2i, 2i + 2):  the low two bits of q[32c + i]        i = 0 .. 15
    B[c] bits [2i, 2i + 2):  the low two bits of q[32c + 16 + i]   i = 0 .. 15
    H[c] bit  i:             the high bit of q[32c + i]            i = 0 .. 31

    Exactly 3 bits a value (12 bytes per 32 values; kernels.pack's 24-bit words straddle 32-bit loads), plus K
    padded to a multiple of 32. A kernel reads the three planes with the same offsets, each load coalesced.

Fields past K are zero. Scales and zeros stay fp16 with the same values; the kernels read them transposed,
[K // G, N], so the N columns a program needs for one group are contiguous: `transposed_view` gives the
canonical [N, K // G] tensor as a view of such storage (the same bytes, so weight_bytes does not change).

The kernels put one K tile inside one group, so a layer takes this layout when G == K (per channel) or G is
a multiple of 32 (the engine's 32 / 64 / 128): `unsupported_reason` says why another does not.
"""

from __future__ import annotations

import torch

from kernels.pack import pack, packed_cols, unpack

CHUNK = 32  # values per 3-bit chunk, and the multiple of a group size the kernels can tile


def values_per_word(bits: int) -> int:
    """Values one word (3-bit: one chunk of three words) holds: the K step of one column of words."""
    return CHUNK if bits == 3 else 32 // bits


def words_per_row(bits: int, in_features: int) -> int:
    """W of the int32 [N, W] words for in_features = K."""
    if bits == 3:
        return 3 * -(-in_features // CHUNK)
    return -(-packed_cols(in_features, bits) // 4)


def plane_words(bits: int, in_features: int) -> int:
    """Words between the 3-bit planes A, B and H of one row (0 for the other widths)."""
    return -(-in_features // CHUNK) if bits == 3 else 0


def unsupported_reason(bits: int, group_size: int, in_features: int) -> str | None:
    """None when the Triton kernels can run this weight, else why not (it then takes the reference)."""
    if bits not in (2, 3, 4, 8):
        return f"bits={bits} has no GPU layout"
    if group_size != in_features and group_size % CHUNK:
        return (f"group_size={group_size} is neither per channel ({in_features}) nor a multiple of {CHUNK}: "
                "the kernels keep one K tile inside one group")
    return None


def _wrap_int32(v: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> int32 with the same 32 bits."""
    return torch.where(v >= 2**31, v - 2**32, v).to(torch.int32)


def _pack_fields(q: torch.Tensor, width: int) -> torch.Tensor:
    """q [..., F] of `width`-bit values, F * width == 32 -> one int32 word [...] with field i at bits [width*i, ...)."""
    shifts = torch.arange(q.shape[-1], device=q.device, dtype=torch.int64) * width
    return _wrap_int32((q.to(torch.int64) << shifts).sum(-1))


def _fields(words: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Inverse of _pack_fields: int32 [...] -> uint8 [..., count]."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(count, device=words.device, dtype=torch.int64) * width
    return ((w.unsqueeze(-1) >> shifts) & ((1 << width) - 1)).to(torch.uint8)


def to_gpu_words(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Canonical uint8 [N, packed_cols(K, bits)] (kernels.pack) -> int32 words [N, W] (a view when it can be)."""
    if qweight.dtype == torch.int32:
        return qweight
    n = qweight.shape[0]
    if bits == 3:
        p = plane_words(3, in_features)
        q = unpack(qweight, 3, in_features)
        q = torch.nn.functional.pad(q, (0, p * CHUNK - in_features)).reshape(n, p, CHUNK)  # (N, P, 32)
        low, high = q & 3, q >> 2
        planes = (_pack_fields(low[..., :16], 2), _pack_fields(low[..., 16:], 2), _pack_fields(high, 1))
        return torch.cat(planes, dim=1).contiguous()  # (N, 3P): [A | B | H]
    cols = qweight.shape[1]
    if cols % 4 == 0 and qweight.is_contiguous():
        return qweight.view(torch.int32)  # (N, cols / 4): the same bytes
    padded = torch.nn.functional.pad(qweight, (0, -cols % 4))
    return padded.contiguous().view(torch.int32)


def from_gpu_words(words: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of `to_gpu_words`: int32 [N, W] -> canonical uint8 [N, packed_cols(K, bits)] (exact)."""
    if words.dtype == torch.uint8:
        return words
    n = words.shape[0]
    if bits == 3:
        p = plane_words(3, in_features)
        a, b, h = words[:, :p], words[:, p:2 * p], words[:, 2 * p:]
        low = torch.cat([_fields(a, 2, 16), _fields(b, 2, 16)], dim=-1)  # (N, P, 32)
        q = (low | (_fields(h, 1, 32) << 2)).reshape(n, p * CHUNK)[:, :in_features]
        return pack(q, 3)
    return words.contiguous().view(torch.uint8)[:, :packed_cols(in_features, bits)].contiguous()


def transposed_view(t: torch.Tensor) -> torch.Tensor:
    """[N, G'] with [G', N] contiguous storage underneath (a view of `t` when it already is one)."""
    return t if t.T.is_contiguous() else t.T.contiguous().T
