"""KV-cache compression in generation: quantized (KIVI), GEAR, and an eviction baseline (StreamingLLM).

- KIVI (Liu et al., "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", 2024,
  https://arxiv.org/abs/2402.02750): keys are quantized per channel (a group is `group_size`
  consecutive tokens of one channel), values per token (a group is `group_size` channels of one
  token). The most recent `residual` tokens stay in full precision; older tokens are flushed into
  the quantized store in chunks: keys in whole groups of tokens (a per-channel group needs all of its
  tokens), values token by token as they leave the window.
- GEAR (Kang et al., "GEAR: An Efficient KV Cache Compression Recipe for Near-Lossless Generative
  Inference of LLM", 2024, https://arxiv.org/abs/2403.05527): X ~= D + L + S with S the largest
  `outliers`% of entries kept exactly (sparse), D the KIVI-style quantized backbone of the rest, and
  L = A @ B a rank-`rank` approximation of the quantization residual, per head and chunk.
- StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023,
  https://arxiv.org/abs/2309.17453): keep the first `sinks` tokens and the last `window` tokens,
  evict the rest. Keys keep the positions they were rotated with (no re-rotation).

Every cache is a transformers `Cache` (one layer object per decoder layer), so `model.generate(...,
past_key_values=make_cache(model, cfg))` and a plain forward loop both use it. Packing and
(de)quantization are kernels.kv's; this file holds the cache logic, the GEAR residual terms, and
the byte counting: `nbytes` of a cache is the sum of the bytes of the tensors it stores.

Shapes: key/value states are [B, H, T, D] (batch, kv heads, tokens, head_dim), as in transformers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

from compressor.errors import RecipeError
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


# --- cache layers -------------------------------------------------------------------------------


class _KVLayerBase(CacheLayerMixin):
    """Shared bookkeeping: `seen` tokens (positions), dtype of the model's states, byte counting."""

    is_sliding = False
    is_croppable = False

    def __init__(self):
        super().__init__()
        self.seen = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        B, H, _, D = key_states.shape
        self.keys = key_states.new_zeros(B, H, 0, D, dtype=KV_STORE_DTYPE)  # fp window, (B, H, t, D)
        self.values = value_states.new_zeros(B, H, 0, value_states.shape[-1], dtype=KV_STORE_DTYPE)
        self.is_initialized = True

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored keys and values as the model's dtype, [B, H, stored, D] each."""
        return self.keys.to(self.dtype), self.values.to(self.dtype)

    def store(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Add new states to the store (compressing or evicting as the layer does); returns nothing."""
        raise NotImplementedError

    def update(self, key_states, value_states, *args, **kwargs):
        """Attend to what the cache stored plus the new states (exact), then store the new states."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self.materialize()
        self.store(key_states, value_states)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False
        self.seen = 0

    def _batch_op(self, fn) -> None:
        if self.is_initialized:
            self.keys, self.values = fn(self.keys), fn(self.values)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._batch_op(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._batch_op(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._batch_op(lambda t: t[indices])

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.keys, self.values)


class Fp16Layer(_KVLayerBase):
    """The uncompressed baseline: every token's key and value in fp16."""

    def store(self, key_states, value_states):
        self.seen += key_states.shape[-2]
        self.keys = torch.cat([self.keys, key_states.to(KV_STORE_DTYPE)], dim=-2)
        self.values = torch.cat([self.values, value_states.to(KV_STORE_DTYPE)], dim=-2)


class QuantizedLayer(_KVLayerBase):
    """KIVI (and, with `rank`/`outlier_ratio`, GEAR) for one decoder layer.

    Tokens [0, q_k) of the keys live in `key_chunks` (each a whole number of `group_size`-token
    groups), tokens [q_k, seen) in the fp window `self.keys`; the same for values with `q_v`.
    A window holds at least `residual` tokens; keys flush when `residual + key_chunk` tokens wait,
    values when `residual + value_chunk` do. A forward attends to the dequantized store, the fp
    window and its own new states (kept exact, as KIVI does for the current step).
    """

    def __init__(self, bits: int, group_size: int, residual: int, *, rank: int = 0, outlier_ratio: float = 0.0,
                 key_chunk: int | None = None, value_chunk: int = 1):
        super().__init__()
        self.bits, self.group_size, self.residual = bits, group_size, residual
        self.rank, self.outlier_ratio = rank, outlier_ratio
        self.gear = rank > 0 or outlier_ratio > 0
        self.key_chunk = key_chunk or group_size
        self.value_chunk = value_chunk
        self.key_chunks: list = []
        self.value_chunks: list = []

    def reset(self) -> None:
        super().reset()
        self.key_chunks, self.value_chunks = [], []

    def _compress(self, x: torch.Tensor, axis: int):
        if self.gear:
            return GearKV.compress(x, self.bits, self.group_size, axis, self.rank, self.outlier_ratio)
        return QuantizedKV.quantize(x, self.bits, self.group_size, axis)

    def _read(self, chunks: list, window: torch.Tensor) -> torch.Tensor:
        parts = [c.dequantize(self.dtype) for c in chunks]  # each (B, H, t_i, D)
        return torch.cat([*parts, window.to(self.dtype)], dim=-2)

    def _flush(self, window: torch.Tensor, chunks: list, chunk: int, axis: int) -> torch.Tensor:
        """Move the oldest whole chunks beyond the residual window into the compressed store."""
        n = (window.shape[-2] - self.residual) // chunk * chunk
        if n <= 0:
            return window
        c = self._compress(window[..., :n, :].to(self.dtype), axis)
        if chunks and not self.gear:
            chunks[-1] = concat_tokens(chunks[-1], c)  # one growing store (GEAR's L and S are per chunk)
        else:
            chunks.append(c)
        return window[..., n:, :]

    def materialize(self):
        return self._read(self.key_chunks, self.keys), self._read(self.value_chunks, self.values)

    def store(self, key_states, value_states):
        self.seen += key_states.shape[-2]
        self.keys = self._flush(torch.cat([self.keys, key_states.to(KV_STORE_DTYPE)], dim=-2),
                                self.key_chunks, self.key_chunk, KEY_AXIS)
        self.values = self._flush(torch.cat([self.values, value_states.to(KV_STORE_DTYPE)], dim=-2),
                                  self.value_chunks, self.value_chunk, VALUE_AXIS)

    def _batch_op(self, fn) -> None:
        super()._batch_op(fn)
        self.key_chunks = [c.map_batch(fn) for c in self.key_chunks]
        self.value_chunks = [c.map_batch(fn) for c in self.value_chunks]

    @property
    def nbytes(self) -> int:
        return super().nbytes + sum(c.nbytes for c in (*self.key_chunks, *self.value_chunks))


class SinkWindowLayer(_KVLayerBase):
    """StreamingLLM eviction: keep the first `sinks` and the last `window` tokens (fp16), drop the rest.

    The states keep their original rotary positions. `get_mask_sizes` returns an offset of
    `seen - stored`, so every stored token is visible and new tokens stay causal among themselves.
    With left padding (`pad`: [B] leading pad tokens per row), a row's sinks are its first real tokens,
    and a row with at most `sinks + window` real tokens keeps its last `sinks + window` positions as they
    are: either way stored index i stands for position `offset + i` wherever the padding mask is read.
    """

    def __init__(self, sinks: int, window: int, pad: torch.Tensor | None = None):
        super().__init__()
        self.sinks, self.window = sinks, window
        self.pad = pad

    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        B = key_states.shape[0]
        if self.pad is not None:
            if B % self.pad.shape[0]:
                raise ValueError(f"padding given for {self.pad.shape[0]} rows, states have batch {B}: build the "
                                 f"cache with the attention_mask of this batch")
            # generate() expands the batch (beams, num_return_sequences) with repeat_interleave
            self.pad = self.pad.to(key_states.device).repeat_interleave(B // self.pad.shape[0])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        stored = self.keys.shape[-2] if self.is_initialized else 0
        return stored + query_length, self.seen - stored

    def _evict(self, x: torch.Tensor) -> torch.Tensor:
        B, H, L, D = x.shape
        S, W = self.sinks, self.window
        if L <= S + W:
            return x
        if self.pad is None:
            return torch.cat([x[..., :S, :], x[..., L - W :, :]], dim=-2)
        # Slot j of x holds position seen - L + j (slots before a row's kept sinks are padding or evicted), so
        # a row's first real token is at slot pad - (seen - L); one with few real tokens keeps slots L-S-W..L-1.
        start = (self.pad - (self.seen - L)).clamp(0, L - S - W)  # (B,)
        idx = torch.cat([start[:, None] + torch.arange(S, device=x.device),
                         torch.arange(L - W, L, device=x.device).expand(B, W)], dim=1)  # (B, S+W)
        return x.gather(2, idx[:, None, :, None].expand(B, H, S + W, D))

    def store(self, key_states, value_states):
        self.seen += key_states.shape[-2]
        self.keys = self._evict(torch.cat([self.keys, key_states.to(KV_STORE_DTYPE)], dim=-2))
        self.values = self._evict(torch.cat([self.values, value_states.to(KV_STORE_DTYPE)], dim=-2))

    def _batch_op(self, fn) -> None:
        super()._batch_op(fn)
        if self.is_initialized and self.pad is not None:
            self.pad = fn(self.pad)


class CompressedKVCache(Cache):
    """A transformers Cache made of one compressed layer per decoder layer; `nbytes` sums them."""

    def __init__(self, layers: list[_KVLayerBase], cfg=None):
        super().__init__(layers=layers)
        self.cfg = cfg

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)


# --- building caches from a stage config --------------------------------------------------------


def _text_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    return config.get_text_config(decoder=True)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def check_cache_config(cfg, head_dim: int | None = None) -> None:
    """RecipeError when `cfg` is not a KV cache config (it has no `cache_layer`), or cannot run on a
    model with this head_dim (the config's own `check_head_dim`; skipped when head_dim is None)."""
    if not callable(getattr(cfg, "cache_layer", None)):
        raise RecipeError("method", getattr(cfg, "method", None), "not a KV cache config: use a KV stage "
                          "(kivi, gear, streaming) or the fp16 baseline (FP16)")
    check = getattr(cfg, "check_head_dim", None)
    if check is not None and head_dim is not None:
        check(head_dim)


def left_padding(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Leading pad tokens per row [B] of a left-padded attention_mask [B, T] (None when there is none)."""
    if attention_mask is None or attention_mask.dim() != 2:
        return None
    return (attention_mask.cumsum(-1) == 0).sum(-1)  # (B,)


def make_layer(cfg, head_dim: int | None = None, pad: torch.Tensor | None = None) -> _KVLayerBase:
    """One cache layer for a KV cache config (a KV stage's, or FP16): the config builds it
    (`cfg.cache_layer(pad)`), after checking it against head_dim when given; `pad` as `left_padding`."""
    check_cache_config(cfg, head_dim)
    return cfg.cache_layer(pad)


def make_cache(model, cfg=None, attention_mask: torch.Tensor | None = None) -> CompressedKVCache:
    """A fresh cache for one generate() call or one evaluation pass.

    `cfg` defaults to the config a KV stage attached to the model (`model.kv_cache_config`); without
    either, the fp16 baseline. Pass it as `model.generate(..., past_key_values=make_cache(model))`, with
    the batch's `attention_mask` when it is left-padded (eviction keeps each row's own first tokens).
    """
    cfg = cfg if cfg is not None else getattr(model, "kv_cache_config", None)
    cfg = cfg if cfg is not None else FP16
    config = _text_config(model)
    head_dim = head_dim_of(config)
    pad = left_padding(attention_mask)
    return CompressedKVCache([make_layer(cfg, head_dim, pad) for _ in range(config.num_hidden_layers)], cfg)


def kv_cache_for(model) -> CompressedKVCache | None:
    """A fresh cache when a KV stage configured `model`, else None (generate()'s default cache)."""
    cfg = getattr(model, "kv_cache_config", None)
    return make_cache(model, cfg) if cfg is not None else None


@dataclass(frozen=True)
class Fp16KV:
    """Config of the uncompressed fp16 baseline cache (not a recipe stage)."""

    method: str = "fp16"

    def cache_layer(self, pad: torch.Tensor | None = None) -> Fp16Layer:
        return Fp16Layer()


FP16 = Fp16KV()


# --- memory -------------------------------------------------------------------------------------


def cache_nbytes(cache) -> int:
    """Bytes of the tensors a cache stores: ours count packed data, scales, zeros, low-rank factors,
    outliers and fp windows; a transformers DynamicCache counts its key and value tensors."""
    if isinstance(cache, CompressedKVCache):
        return cache.nbytes
    return sum(tensor_bytes(layer.keys, layer.values) for layer in cache.layers if layer.is_initialized)


def _cfg_key(cfg) -> tuple:
    fields = getattr(cfg, "__dataclass_fields__", {})
    return (getattr(cfg, "method", None), *((f, repr(getattr(cfg, f))) for f in sorted(fields)))


def kv_bytes_per_token(cfg, *, num_layers: int, num_kv_heads: int, head_dim: int, context: int = 1024,
                       batch: int = 1, prefill: int = 0, seed: int = 0) -> float:
    """Measured KV bytes per token (all layers, one sequence) of `cfg` at `context` tokens.

    Fills one real cache layer with random fp16 states (a `prefill`-token prompt, then one token at a
    time up to `context`, as decoding does), sums the bytes of its stored tensors, and scales by
    `num_layers`. The hardware projection multiplies this by context x batch.
    """
    key = (_cfg_key(cfg), num_kv_heads, head_dim, context, batch, prefill, seed)
    return _layer_bytes(key, cfg, num_kv_heads, head_dim, context, batch, prefill, seed) * num_layers / (
        context * batch)


_BYTES: dict = {}  # measured bytes of one layer, by (config, shapes): the projection asks repeatedly


def _layer_bytes(key, cfg, heads, head_dim, context, batch, prefill, seed) -> int:
    if key not in _BYTES:
        layer = make_layer(cfg, head_dim)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, batch, heads, context, head_dim, generator=g).to(KV_STORE_DTYPE)  # (2, B, H, T, D)
        with torch.no_grad():  # store() only: the bytes do not depend on what attention reads
            layer.lazy_initialization(x[0], x[1])
            if prefill:
                layer.store(x[0, :, :, :prefill], x[1, :, :, :prefill])
            for t in range(prefill, context):
                layer.store(x[0, :, :, t : t + 1], x[1, :, :, t : t + 1])
        _BYTES[key] = layer.nbytes
    return _BYTES[key]


def kv_heads_per_layer(config) -> list[int]:
    """KV heads of each decoder layer: the global `num_key_value_heads`, or what structured pruning left
    in each layer (`config.pruned_layout["num_key_value_heads"]`, compressor/engine/methods/prune_structured.py)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    n_layers = config.num_hidden_layers
    per_layer = (getattr(config, "pruned_layout", None) or {}).get("num_key_value_heads") or [heads] * n_layers
    if len(per_layer) != n_layers:
        raise ValueError(f"config.pruned_layout lists KV heads for {len(per_layer)} layers but the config has "
                         f"num_hidden_layers {n_layers}: the layout belongs to another model; drop it or re-prune")
    return list(per_layer)


def model_kv_bytes_per_token(model, cfg=None, context: int = 1024, **kw) -> float:
    """`kv_bytes_per_token` for a model's shapes (layers, kv heads, head_dim)."""
    config = _text_config(model)
    cfg = cfg if cfg is not None else (getattr(model, "kv_cache_config", None) or FP16)
    per_layer = kv_heads_per_layer(config)
    return sum(kv_bytes_per_token(cfg, num_layers=per_layer.count(h), num_kv_heads=h, head_dim=head_dim_of(config),
                                  context=context, **kw) for h in sorted(set(per_layer)))


# --- long-context quality -----------------------------------------------------------------------


@torch.no_grad()
def kv_perplexity(model, tokens: torch.Tensor, cfg=None, *, prefill: int = 1, buckets: int = 4,
                  progress=None) -> dict:
    """Perplexity with the cache in the loop: tokens [B, T] are fed one at a time after a `prefill`-token
    prompt, each step attending to what the cache stored (compressed, evicted), so errors accumulate as
    in real decoding. Scores tokens prefill..T-1.

    Returns {"ppl", "nll", "tokens", "kv_bytes" (cache at the end, measured), "kv_bytes_per_token",
    "ppl_by_position": [{"start", "end", "ppl"}] over `buckets` equal spans of positions}.
    `progress(done, total)` is called every 32 steps when given.
    """
    if tokens.dim() != 2 or tokens.shape[1] < prefill + 1:
        raise ValueError(f"tokens must be [batch, length] with length > prefill={prefill}, got {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    B, T = tokens.shape
    cache = make_cache(model, cfg)
    nll = torch.zeros(B, T - prefill, dtype=torch.float64)  # (B, T - prefill): nll of token prefill + i
    out = model(tokens[:, :prefill], past_key_values=cache, use_cache=True)
    logits = out.logits[:, -1]
    for t in range(prefill, T):
        nll[:, t - prefill] = F.cross_entropy(logits.float(), tokens[:, t], reduction="none").double().cpu()
        if t + 1 < T:
            logits = model(tokens[:, t : t + 1], past_key_values=cache, use_cache=True).logits[:, -1]
        if progress is not None and (t - prefill) % 32 == 0:
            progress(t - prefill, T - prefill)
    per_pos = nll.mean(dim=0)  # (T - prefill,)
    edges = torch.linspace(0, per_pos.numel(), buckets + 1).long().tolist()
    by_pos = [{"start": prefill + a, "end": prefill + b, "ppl": math.exp(per_pos[a:b].mean().item())}
              for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    mean = nll.mean().item()
    nbytes = cache_nbytes(cache)
    return {"ppl": math.exp(mean), "nll": mean, "tokens": int(nll.numel()), "kv_bytes": nbytes,
            "kv_bytes_per_token": nbytes / (B * cache.get_seq_length()), "ppl_by_position": by_pos}


@contextmanager
def kv_cache_in_generate(model, cfg=None):
    """Within the block, every `model.generate()` call without its own cache gets a fresh compressed one.

    The hook for generation-based tests under KV compression (the arithmetic stress test):
    `with kv_cache_in_generate(model, cfg): evaluate_arithmetic(model, tokenizer, problems)`.
    `cfg` defaults to `model.kv_cache_config`. The call's `attention_mask` tells the cache the left padding.
    """
    cfg = cfg if cfg is not None else getattr(model, "kv_cache_config", None) or FP16
    had_own = "generate" in vars(model)
    original = model.generate

    def generate(*args, **kwargs):
        if kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = make_cache(model, cfg, kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    model.generate = generate
    try:
        yield model
    finally:
        if had_own:
            model.generate = original
        else:
            del model.generate
