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
past_key_values=make_cache(model, cfg))` and a plain forward loop both use it.

    store.py    compressed runs of tokens (pure tensor code; packing is kernels.kv's)
    layers.py   the cache layers and the Cache made of them
    cache.py    a KV config -> a cache (make_cache, kv_cache_in_generate)
    metrics.py  measurements: bytes per token, cache bytes, perplexity with the cache in the loop

Shapes: key/value states are [B, H, T, D] (batch, kv heads, tokens, head_dim), as in transformers.
"""

from compressor.engine.kvcache.cache import (
    FP16,
    Fp16KV,
    check_cache_config,
    head_dim_of,
    kv_cache_for,
    kv_cache_in_generate,
    left_padding,
    make_cache,
    make_layer,
)
from compressor.engine.kvcache.layers import CompressedKVCache, Fp16Layer, QuantizedLayer, SinkWindowLayer
from compressor.engine.kvcache.metrics import (
    cache_nbytes,
    kv_bytes_per_token,
    kv_heads_per_layer,
    kv_perplexity,
    model_kv_bytes_per_token,
)
from compressor.engine.kvcache.store import (
    KEY_AXIS,
    KV_BITS,
    KV_STORE_DTYPE,
    LOWRANK_DTYPE,
    VALUE_AXIS,
    GearKV,
    QuantizedKV,
    concat_tokens,
    lowrank,
    split_outliers,
    tensor_bytes,
)

__all__ = [
    "FP16", "KEY_AXIS", "KV_BITS", "KV_STORE_DTYPE", "LOWRANK_DTYPE", "VALUE_AXIS", "CompressedKVCache", "Fp16KV",
    "Fp16Layer", "GearKV", "QuantizedKV", "QuantizedLayer", "SinkWindowLayer", "cache_nbytes", "check_cache_config",
    "concat_tokens", "head_dim_of", "kv_bytes_per_token", "kv_cache_for", "kv_cache_in_generate",
    "kv_heads_per_layer", "kv_perplexity", "left_padding", "lowrank", "make_cache", "make_layer",
    "model_kv_bytes_per_token", "split_outliers", "tensor_bytes",
]
