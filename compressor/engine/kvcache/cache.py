"""Building caches: a KV config (a KV stage's, or the fp16 baseline) -> one layer per decoder layer.

The config builds its own layer (`cfg.cache_layer(pad)`, compressor/engine/methods/kv.py), so nothing
here knows the method names. `make_cache(model)` uses the config a KV stage attached to the model;
`kv_cache_in_generate(model)` gives every `generate()` call in its block a fresh compressed cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from compressor.engine.kvcache.layers import CompressedKVCache, Fp16Layer, _KVLayerBase
from compressor.errors import RecipeError


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
