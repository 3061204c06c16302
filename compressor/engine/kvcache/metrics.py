"""Measurements of KV caches: bytes a cache holds (per token, per model) and perplexity with the cache
in the loop. Used by compressor.measure (speed, projections) and the KV benchmark.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from compressor.engine.kvcache.cache import FP16, _text_config, head_dim_of, make_cache, make_layer
from compressor.engine.kvcache.layers import CompressedKVCache
from compressor.engine.kvcache.store import KV_STORE_DTYPE, tensor_bytes


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
