"""Compressed runs of KV tokens, pure tensor code: KIVI's quantized store and GEAR's D + L + S.

Packing and (de)quantization are kernels.kv's. `nbytes` of a chunk is the sum of the bytes of the
tensors it stores. Shapes: key/value states are [B, H, T, D] (batch, kv heads, tokens, head_dim).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.kv import dequantize_kv, quantize_kv

# Everything a compressed cache keeps in floating point (the recent window, scales, zeros, low-rank
# factors, outlier values) is stored in fp16, as a deployment would; states are cast back to the
# model's dtype when read. The fp16 baseline stores the same way, so byte counts compare like for like.
KV_STORE_DTYPE = torch.float16
KV_BITS = (2, 4, 8)
# Keys are grouped along tokens (dim -2), values along channels (dim -1).
KEY_AXIS, VALUE_AXIS = -2, -1
# Low-rank factors are computed in fp32 (SVD of the residual), then stored in KV_STORE_DTYPE.
LOWRANK_DTYPE = torch.float32


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes held by the given tensors' elements (None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# --- compressed chunks (pure tensor code) -------------------------------------------------------


@dataclass
class QuantizedKV:
    """A run of tokens quantized by kernels.kv: packed integers plus fp16 scales and zeros.

    `axis` is the grouping axis (KEY_AXIS: per channel, groups of tokens; VALUE_AXIS: per token,
    groups of channels); `shape` the logical [B, H, T, D].
    """

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int
    axis: int
    shape: tuple[int, ...]

    @classmethod
    def quantize(cls, x: torch.Tensor, bits: int, group_size: int, axis: int) -> QuantizedKV:
        packed, scales, zeros = quantize_kv(x, bits, group_size, axis)
        return cls(packed, scales.to(KV_STORE_DTYPE), zeros.to(KV_STORE_DTYPE), bits, group_size, axis,
                   tuple(x.shape))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return dequantize_kv(self.packed, self.scales, self.zeros, bits=self.bits, group_size=self.group_size,
                             axis=self.axis, length=self.shape[self.axis], dtype=dtype)

    @property
    def tokens(self) -> int:
        return self.shape[-2]

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.packed, self.scales, self.zeros)

    def map_batch(self, fn) -> QuantizedKV:
        """Apply a batch-dim op (index_select, repeat_interleave) to every stored tensor."""
        packed, scales, zeros = fn(self.packed), fn(self.scales), fn(self.zeros)
        return QuantizedKV(packed, scales, zeros, self.bits, self.group_size, self.axis,
                           (packed.shape[0], *self.shape[1:]))


def concat_tokens(a: QuantizedKV, b: QuantizedKV) -> QuantizedKV:
    """Append b's tokens to a's store without requantizing.

    kernels.kv moves the grouped axis last: per-token chunks (VALUE_AXIS) are [B, H, T, packed(D)]
    and concatenate along dim -2; per-channel chunks (KEY_AXIS) are [B, H, D, packed(T)] and
    concatenate along dim -1, which stays byte-aligned because every chunk is whole groups of
    tokens and a group size is a multiple of 8.
    """
    assert (a.axis, a.bits, a.group_size) == (b.axis, b.bits, b.group_size), "chunks of different formats"
    dim = -2 if a.axis == VALUE_AXIS else -1
    cat = lambda x, y: torch.cat([x, y], dim=dim)  # noqa: E731
    return QuantizedKV(cat(a.packed, b.packed), cat(a.scales, b.scales), cat(a.zeros, b.zeros), a.bits,
                       a.group_size, a.axis, (*a.shape[:-2], a.tokens + b.tokens, a.shape[-1]))


def _group_mean(x: torch.Tensor, group_size: int, axis: int) -> torch.Tensor:
    """Mean of each quantization group, broadcast back to x's shape [B, H, T, D]."""
    B, H, T, D = x.shape
    if axis == KEY_AXIS:
        g = x.reshape(B, H, T // group_size, group_size, D)  # (B, H, T/G, G, D)
        return g.mean(dim=3, keepdim=True).expand_as(g).reshape(B, H, T, D)
    g = x.reshape(B, H, T, D // group_size, group_size)  # (B, H, T, D/G, G)
    return g.mean(dim=4, keepdim=True).expand_as(g).reshape(B, H, T, D)


def split_outliers(x: torch.Tensor, ratio: float, group_size: int, axis: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GEAR's sparse term S: per head, the `ratio` share of entries farthest from their group's mean.

    Returns (x_filled, idx, val): x with those entries set to their group mean (so they no longer
    stretch the quantization range), their flat indices into T*D ([B, H, k], int16 when T*D fits,
    else int32) and exact values ([B, H, k], fp16).
    """
    B, H, T, D = x.shape
    k = int(round(ratio * T * D))
    center = _group_mean(x.float(), group_size, axis)
    if k == 0:
        empty = torch.zeros(B, H, 0, dtype=torch.int16, device=x.device)
        return x, empty, empty.to(KV_STORE_DTYPE)
    score = (x.float() - center).abs().reshape(B, H, T * D)  # (B, H, T*D)
    idx = score.topk(k, dim=-1).indices  # (B, H, k)
    flat = x.reshape(B, H, T * D)
    val = flat.gather(-1, idx)
    filled = flat.scatter(-1, idx, center.reshape(B, H, T * D).gather(-1, idx).to(x.dtype)).reshape(B, H, T, D)
    idx_dtype = torch.int16 if T * D <= torch.iinfo(torch.int16).max else torch.int32
    return filled, idx.to(idx_dtype), val.to(KV_STORE_DTYPE)


def lowrank(R: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GEAR's L: the best rank-`rank` approximation of R [B, H, T, D] per head, R ~= A @ Bt.

    A = U_r diag(S_r) [B, H, T, r], Bt = V_r^T [B, H, r, D], from a truncated SVD (the paper uses a
    few power iterations to the same end; at cache chunk sizes the exact SVD is cheap).
    """
    U, S, Vh = torch.linalg.svd(R.to(LOWRANK_DTYPE), full_matrices=False)  # U (B,H,T,m) S (B,H,m) Vh (B,H,m,D)
    r = min(rank, S.shape[-1])
    A = U[..., :r] * S[..., None, :r]  # (B, H, T, r)
    return A.to(KV_STORE_DTYPE), Vh[..., :r, :].to(KV_STORE_DTYPE)


@dataclass
class GearKV:
    """A GEAR-compressed run of tokens: X ~= dequant(base) + A @ Bt, then the outliers put back exactly."""

    base: QuantizedKV
    A: torch.Tensor  # (B, H, T, r)
    Bt: torch.Tensor  # (B, H, r, D)
    idx: torch.Tensor  # (B, H, k) flat index into T*D
    val: torch.Tensor  # (B, H, k)

    @classmethod
    def compress(cls, x: torch.Tensor, bits: int, group_size: int, axis: int, rank: int,
                 outlier_ratio: float) -> GearKV:
        filled, idx, val = split_outliers(x, outlier_ratio, group_size, axis)
        base = QuantizedKV.quantize(filled, bits, group_size, axis)
        R = filled.to(LOWRANK_DTYPE) - base.dequantize(LOWRANK_DTYPE)  # quantization residual
        if rank > 0:
            A, Bt = lowrank(R, rank)
        else:
            A = x.new_zeros(*x.shape[:-1], 0, dtype=KV_STORE_DTYPE)
            Bt = x.new_zeros(*x.shape[:-2], 0, x.shape[-1], dtype=KV_STORE_DTYPE)
        return cls(base, A, Bt, idx, val)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        x = self.base.dequantize(LOWRANK_DTYPE)
        if self.A.shape[-1]:
            x = x + self.A.to(LOWRANK_DTYPE) @ self.Bt.to(LOWRANK_DTYPE)
        B, H, T, D = x.shape
        if self.idx.shape[-1]:
            x = x.reshape(B, H, T * D).scatter(-1, self.idx.long(), self.val.to(LOWRANK_DTYPE)).reshape(B, H, T, D)
        return x.to(dtype)

    @property
    def tokens(self) -> int:
        return self.base.tokens

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + tensor_bytes(self.A, self.Bt, self.idx, self.val)

    def map_batch(self, fn) -> GearKV:
        return GearKV(self.base.map_batch(fn), fn(self.A), fn(self.Bt), fn(self.idx), fn(self.val))
