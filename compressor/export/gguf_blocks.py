"""GGUF block types the lab's weights map onto, packed from the lab's integers (no re-quantization).

Block layouts (ggml `block_q4_0`, `block_q4_1`, `block_q8_0`; 32 weights of one row per block):

    Q4_0  [d fp16][16 bytes]          w = d * (q - 8)     byte j = q[j] | q[j + 16] << 4   (18 bytes)
    Q4_1  [d fp16][m fp16][16 bytes]  w = d * q + m       same nibble order                (20 bytes)
    Q8_0  [d fp16][32 x int8]         w = d * q8                                           (34 bytes)

The lab's W = (q - zeros) * scales (scales fp16, groups of G columns) maps onto them when G is a multiple
of 32 (each group is G / 32 blocks with the same d):
  - symmetric 4-bit (zeros = 8)  -> Q4_0, d = scale: exact;
  - asymmetric 4-bit             -> Q4_1, d = scale, m = -zeros * scale rounded to fp16: exact only where that
    product fits fp16's 11 significant bits (the integers are kept; the error is measured, never assumed);
  - symmetric 8-bit (zeros = 128) -> Q8_0, q8 = q - 128, d = scale: exact;
  - int8 rows with an fp32 scale (W8A8, LLM.int8) -> Q8_0 with d = fp16(scale): the scale is rounded.
Anything else is re-quantized by the `gguf` package's own quantizer (`requantize`), or written as floats.
"""

from __future__ import annotations

import numpy as np
import torch

from compressor.export.source import IntWeight, ScaledWeight

BLOCK = 32


def _blocks(t: torch.Tensor) -> np.ndarray:
    """[N, K] -> [N, K / 32, 32] numpy view of one row's consecutive blocks."""
    n, k = t.shape
    return t.reshape(n, k // BLOCK, BLOCK).numpy()


def _fp16_bytes(x: torch.Tensor) -> np.ndarray:
    """[N, K/32] fp16 -> [N, K/32, 2] uint8 (little-endian, as GGUF stores it)."""
    return x.to(torch.float16).contiguous().numpy().view(np.uint8).reshape(*x.shape, 2)


def _nibbles(q: torch.Tensor) -> np.ndarray:
    """q [N, K] in [0, 15] -> [N, K/32, 16] uint8: byte j holds block values j (low) and j + 16 (high)."""
    b = _blocks(q.to(torch.uint8))
    return (b[..., :16] | (b[..., 16:] << 4)).astype(np.uint8)


def _per_block(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K/G] per-group values -> [N, K/32] per-block values (G a multiple of 32)."""
    return x.repeat_interleave(group_size // BLOCK, dim=1)


def pack_q4_0(w: IntWeight) -> np.ndarray:
    """Symmetric 4-bit (zeros = 8) -> Q4_0 bytes [N, K/32 * 18]."""
    n, k = w.q.shape
    d = _fp16_bytes(_per_block(w.scales, w.group_size))
    return np.concatenate([d, _nibbles(w.q)], axis=-1).reshape(n, -1)


def q4_1_min(w: IntWeight) -> torch.Tensor:
    """m = -zeros * scales per group, computed in fp32, rounded to the fp16 Q4_1 stores: [N, K/G] fp16."""
    return (-w.zeros.float() * w.scales.float()).to(torch.float16)


def pack_q4_1(w: IntWeight) -> np.ndarray:
    """4-bit with any zeros (integer or fractional) -> Q4_1 bytes [N, K/32 * 20]."""
    n, k = w.q.shape
    d = _fp16_bytes(_per_block(w.scales, w.group_size))
    m = _fp16_bytes(_per_block(q4_1_min(w), w.group_size))
    return np.concatenate([d, m, _nibbles(w.q)], axis=-1).reshape(n, -1)


def pack_q8_0(q8: torch.Tensor, d: torch.Tensor) -> np.ndarray:
    """q8 int8 [N, K] and d [N, K/32] (rounded to fp16) -> Q8_0 bytes [N, K/32 * 34]."""
    n, k = q8.shape
    qs = _blocks(q8.to(torch.int8)).view(np.uint8)
    return np.concatenate([_fp16_bytes(d), qs], axis=-1).reshape(n, -1)


def pack_int8(w: IntWeight) -> np.ndarray:
    """Symmetric 8-bit (zeros = 128) -> Q8_0: q8 = q - 128."""
    q8 = (w.q.to(torch.int16) - 128).to(torch.int8)
    return pack_q8_0(q8, _per_block(w.scales, w.group_size))


def pack_scaled_int8(w: ScaledWeight) -> np.ndarray:
    """int8 rows with one fp32 scale each -> Q8_0 with that scale rounded to fp16 in every block."""
    n, k = w.weight.shape
    return pack_q8_0(w.weight, w.scale.float().reshape(n, 1).expand(n, k // BLOCK))


def requantize(W: torch.Tensor, qtype) -> np.ndarray:
    """The `gguf` package's own quantizer on the lab's dequantized weight W [N, K] (fp32) -> bytes."""
    from gguf import quants

    return quants.quantize(W.float().contiguous().numpy(), qtype)


def dequantize(data: np.ndarray, qtype, shape: tuple[int, int]) -> torch.Tensor:
    """What the `gguf` package's reader decodes from `data`: fp32 [N, K]."""
    from gguf import quants

    return torch.from_numpy(np.ascontiguousarray(quants.dequantize(data, qtype), dtype=np.float32)).reshape(shape)
