"""Bit packing for low-bit integer weights, one packer per format.

Every packer works along the last dimension (the reduction dimension K of a weight [N, K]) and
returns a contiguous uint8 tensor, so each output row n owns its own bytes and a kernel reads a row
of packed weights as one contiguous run. Values must already be integers in [0, 2**bits - 1].

Widths that do not divide a byte unit are padded with zeros on the right; `unpack` drops the
padding again given `in_features`.

    bits  values per unit  unit      packed shape for q [N, K]
    8     1                1 byte    [N, K]
    4     2                1 byte    [N, ceil(K / 2)]
    3     8                3 bytes   [N, 3 * ceil(K / 8)]
    2     4                1 byte    [N, ceil(K / 4)]
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
# (values, bytes) per packing unit
_UNIT = {8: (1, 1), 4: (2, 1), 3: (8, 3), 2: (4, 1)}


def packed_cols(in_features: int, bits: int) -> int:
    """Number of uint8 columns that `pack` produces for `in_features` values of `bits` bits."""
    _check_bits(bits)
    values, nbytes = _UNIT[bits]
    return -(-in_features // values) * nbytes


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits} is not supported: choose one of {SUPPORTED_BITS}")


def _check_values(q: torch.Tensor, bits: int) -> None:
    if q.is_floating_point() or q.is_complex():
        raise TypeError(f"q must be an integer tensor, got {q.dtype}: round and cast first (q.round().to(torch.uint8))")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 2**bits - 1):
        raise ValueError(
            f"q holds values in [{int(q.min())}, {int(q.max())}], outside [0, {2**bits - 1}] for bits={bits}: "
            "clamp before packing"
        )


def _pad_last(q: torch.Tensor, multiple: int) -> torch.Tensor:
    rem = q.shape[-1] % multiple
    if rem == 0:
        return q
    return torch.nn.functional.pad(q, (0, multiple - rem))


def pack_8bit_u8(q: torch.Tensor) -> torch.Tensor:
    """One value per byte (a plain uint8 copy).

        byte j:  [ q[j] : 8 bits ]
    """
    _check_values(q, 8)
    return q.to(torch.uint8).contiguous()


def unpack_8bit_u8(packed: torch.Tensor) -> torch.Tensor:
    return packed.to(torch.uint8)


def pack_4bit_u8(q: torch.Tensor) -> torch.Tensor:
    """Two values per byte, the even index in the low nibble.

        byte j:  bit 7 ......... 4 3 ......... 0
                 [  q[2j+1]      ][   q[2j]     ]
    """
    _check_values(q, 4)
    q = _pad_last(q.to(torch.uint8), 2)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // 2, 2)  # (..., K/2, 2); explicit sizes: -1 is ambiguous at 0 rows
    return (q[..., 0] | (q[..., 1] << 4)).contiguous()


def unpack_4bit_u8(packed: torch.Tensor) -> torch.Tensor:
    p = packed.to(torch.uint8)
    q = torch.stack([p & 0xF, p >> 4], dim=-1)  # (..., K/2, 2)
    return q.reshape(*p.shape[:-1], 2 * p.shape[-1])


def pack_2bit_u8(q: torch.Tensor) -> torch.Tensor:
    """Four values per byte, the lowest index in the lowest bits.

        byte j:  bit 7 6   5 4    3 2    1 0
                 [q[4j+3]][q[4j+2]][q[4j+1]][q[4j]]
    """
    _check_values(q, 2)
    q = _pad_last(q.to(torch.uint8), 4)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // 4, 4)  # (..., K/4, 4)
    return (q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)).contiguous()


def unpack_2bit_u8(packed: torch.Tensor) -> torch.Tensor:
    p = packed.to(torch.uint8)
    q = torch.stack([(p >> s) & 0x3 for s in (0, 2, 4, 6)], dim=-1)  # (..., K/4, 4)
    return q.reshape(*p.shape[:-1], 4 * p.shape[-1])


def pack_3bit_u8(q: torch.Tensor) -> torch.Tensor:
    """Eight values in three bytes (exactly 3 bits per value), little-endian 24-bit words.

    Value i of a group of eight (k = 8g + i) occupies bits [3i, 3i + 3) of the word
    w = b0 | b1 << 8 | b2 << 16 held in bytes 3g, 3g+1, 3g+2:

        bit   23..21 20..18 17..15 14..12 11..9  8..6   5..3   2..0
              [ v7 ][ v6 ][ v5 ][ v4 ][ v3 ][ v2 ][ v1 ][ v0 ]
        byte  |<------ b2 ------>|<------ b1 ------>|<---- b0 ---->|
        (v2 straddles b0/b1 with bits 6-8; v5 straddles b1/b2 with bits 15-17)
    """
    _check_values(q, 3)
    q = _pad_last(q.to(torch.int32), 8)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // 8, 8)  # (..., K/8, 8)
    shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=q.device)
    word = (q << shifts).sum(dim=-1, dtype=torch.int32)  # (..., K/8), 24 significant bits
    out = torch.stack([(word >> s) & 0xFF for s in (0, 8, 16)], dim=-1)  # (..., K/8, 3)
    return out.to(torch.uint8).reshape(*q.shape[:-2], 3 * q.shape[-2]).contiguous()


def unpack_3bit_u8(packed: torch.Tensor) -> torch.Tensor:
    p = packed.to(torch.int32).reshape(*packed.shape[:-1], packed.shape[-1] // 3, 3)  # (..., K/8, 3)
    word = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)  # (..., K/8)
    shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=p.device)
    q = (word.unsqueeze(-1) >> shifts) & 0x7  # (..., K/8, 8)
    return q.to(torch.uint8).reshape(*packed.shape[:-1], 8 * p.shape[-2])


_PACK = {8: pack_8bit_u8, 4: pack_4bit_u8, 3: pack_3bit_u8, 2: pack_2bit_u8}
_UNPACK = {8: unpack_8bit_u8, 4: unpack_4bit_u8, 3: unpack_3bit_u8, 2: unpack_2bit_u8}


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer values `q` [..., K] in [0, 2**bits - 1] into uint8 [..., packed_cols(K, bits)]."""
    _check_bits(bits)
    return _PACK[bits](q)


def unpack(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of `pack`: uint8 [..., packed_cols(K, bits)] -> uint8 values [..., in_features]."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}: pass the tensor that kernels.pack.pack returned")
    expected = packed_cols(in_features, bits)
    if packed.shape[-1] != expected:
        raise ValueError(
            f"packed has {packed.shape[-1]} columns but {bits}-bit packing of in_features={in_features} "
            f"needs {expected}: check bits and in_features"
        )
    return _UNPACK[bits](packed)[..., :in_features]
