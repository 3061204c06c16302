"""Cache layers, one per decoder layer: the fp16 baseline, KIVI / GEAR (QuantizedLayer) and StreamingLLM
eviction (SinkWindowLayer), and the transformers Cache made of them.

Each layer attends to what it stored plus the new states (exact), then stores the new states,
compressing or evicting as it does. Shapes: key/value states are [B, H, T, D].
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from compressor.engine.kvcache.store import (
    KEY_AXIS,
    KV_STORE_DTYPE,
    VALUE_AXIS,
    GearKV,
    QuantizedKV,
    concat_tokens,
    tensor_bytes,
)


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
