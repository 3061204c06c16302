"""The GPU runtime layout of a packed weight, built once when a QuantLinear moves to CUDA: int32 words along K,
stored K-major so the N columns a program reads are contiguous, and each group's scale and zero in one word.

    words: int32 [W, N]    word row r, column n holds values of q[n, :] as bit fields; a warp reading one word
                           row reads consecutive addresses (coalesced, 16-byte vectors of 4 columns); W =
                           bits * ceil(K / 32) (32 values in `bits` words at every width)
    sz:    int32 [K // G, N]  bits 0..15: scales[n, g] (fp16 bits), bits 16..31: zeros[n, g] (fp16 bits)

2, 4 and 8 bits: V = 32 / bits values per word, R = 32 / V = bits word rows per chunk of 32 values. Within chunk c
the values are dealt round-robin over its R rows: field i of word row R*c + r holds q[n, 32c + R*i + r].

    4-bit (R = 4), chunk c, column n:        bits 31..28    27..24   ...    7..4       3..0
        word row 4c     [ q[n, 32c + 28] ][ q[32c+24] ] ... [ q[32c+4] ][ q[32c]     ]
        word row 4c + 1 [ q[n, 32c + 29] ][ q[32c+25] ] ... [ q[32c+5] ][ q[32c + 1] ]
        ...             (field i of the R rows: R consecutive values, x[32c + R*i : 32c + R*i + R])

    So the x values one field of a thread's R word rows multiplies are contiguous (one vector load), where a
    plain packing along K would put them V apart (one load each). Rows are padded to whole chunks with zeros.

3 bits: three planes of P = ceil(K / 32) word rows, [P0; P1; P2] (W = 3P); chunk c covers q[n, 32c : 32c + 32],
ten 3-bit fields a plane and the chunk's last two values u = q[32c + 30], v = q[32c + 31] in the top bits:

    Pj[c, n] bits [3i, 3i + 3):  q[n, 32c + 10j + i]      j = 0, 1, 2;  i = 0 .. 9
    P0 bits 30..31: u & 3     P1 bit 30: u >> 2     P1 bit 31: v & 1     P2 bits 30..31: v >> 1

    Exactly 3 bits a value (12 bytes per 32 values, as kernels.pack's 3 bytes per 8, whose 24-bit words
    straddle 32-bit loads), K padded to a multiple of 32; 30 of 32 values take one shift and one mask each,
    as at 4 bits (bit planes took two of each). Fields past K are zero.

Why one word for a scale and a zero: the kernels load a group's [BLOCK_N] scales once per K tile, and an int32
vector load takes the same register layout as the word tile's columns, so no shuffle through shared memory
sits in the loop (two fp16 loads took another layout and a barrier-bound conversion each). The module keeps
its `scales` / `zeros` as strided views of `sz` (the same bytes); the state dict stays canonical.

The kernels keep one K tile inside one group, so a layer takes this layout when G == K (per channel) or G is a
multiple of 32 (the engine's 32 / 64 / 128): `unsupported_reason` says why another does not.
"""

from __future__ import annotations

import torch

from kernels.pack import pack, unpack

CHUNK = 32  # values per 3-bit chunk, and the multiple of a group size the kernels can tile


def values_per_word(bits: int) -> int:
    """Fields in one word: V (3-bit: the 32 values of a chunk, one field in each of its planes)."""
    return CHUNK if bits == 3 else 32 // bits


def rows_per_chunk(bits: int) -> int:
    """R: the word rows one chunk of 32 values is dealt over (1 for 3-bit: one row in each plane)."""
    return 1 if bits == 3 else bits


def word_rows(bits: int, in_features: int) -> int:
    """W of the int32 [W, N] words for in_features = K."""
    return bits * -(-in_features // CHUNK)


def plane_rows(bits: int, in_features: int) -> int:
    """Word rows between the 3-bit planes P0, P1 and P2 (0 for the other widths)."""
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
    """Canonical uint8 [N, packed_cols(K, bits)] (kernels.pack) -> int32 words [W, N] (a new tensor)."""
    n, chunks = qweight.shape[0], -(-in_features // CHUNK)
    q = unpack(qweight, bits, in_features)
    q = torch.nn.functional.pad(q, (0, chunks * CHUNK - in_features)).reshape(n, chunks, CHUNK)  # (N, C, 32)
    if bits == 3:
        u, v = q[..., 30].to(torch.int64), q[..., 31].to(torch.int64)
        top = ((u & 3) << 30, ((u >> 2) << 30) | ((v & 1) << 31), (v >> 1) << 30)
        planes = [_wrap_int32((_pack_fields(q[..., 10 * j:10 * j + 10], 3).to(torch.int64) & 0x3FFFFFFF) | top[j])
                  for j in range(3)]
        return torch.cat(planes, dim=1).T.contiguous()  # (3P, N): [P0; P1; P2]
    r = rows_per_chunk(bits)
    fields = q.reshape(n, chunks, 32 // bits, r).transpose(2, 3)  # (N, C, R, V): value 32c + R*i + r at [c, r, i]
    return _pack_fields(fields, bits).reshape(n, chunks * r).T.contiguous()  # (W, N)


def from_gpu_words(words: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of `to_gpu_words`: int32 [W, N] -> canonical uint8 [N, packed_cols(K, bits)] (exact)."""
    rows = words.T  # (N, W)
    n, chunks = rows.shape[0], -(-in_features // CHUNK)
    if bits == 3:
        planes = [rows[:, j * chunks:(j + 1) * chunks].to(torch.int64) & 0xFFFFFFFF for j in range(3)]
        u = ((planes[0] >> 30) & 3) | (((planes[1] >> 30) & 1) << 2)
        v = ((planes[1] >> 31) & 1) | (((planes[2] >> 30) & 3) << 1)
        tens = [_fields(p.to(torch.int32), 3, 10) for p in planes]  # (N, C, 10) each
        q = torch.cat(tens + [u.to(torch.uint8)[..., None], v.to(torch.uint8)[..., None]], dim=-1)  # (N, C, 32)
    else:
        r = rows_per_chunk(bits)
        fields = _fields(rows.reshape(n, chunks, r), bits, 32 // bits)  # (N, C, R, V)
        q = fields.transpose(2, 3).reshape(n, chunks, CHUNK)
    return pack(q.reshape(n, chunks * CHUNK)[:, :in_features], bits)


def pack_scales(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """fp16 scales, zeros [N, K // G] -> int32 sz [K // G, N]: the scale's bits low, the zero's high."""
    pair = torch.stack([scales.to(torch.float16).T, zeros.to(torch.float16).T], dim=-1)  # (K/G, N, 2)
    return pair.contiguous().view(torch.int32).squeeze(-1)


def scale_views(sz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zeros) fp16 [N, K // G] as strided views of sz's bytes (no copy)."""
    pair = sz.view(torch.float16).view(*sz.shape, 2)  # (K/G, N, 2)
    return pair[..., 0].T, pair[..., 1].T
