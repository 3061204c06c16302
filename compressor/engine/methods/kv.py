"""KV-cache stages: KIVI, GEAR and StreamingLLM eviction (see compressor/engine/kvcache.py for the papers).

A KV stage changes no weight. Its apply checks the config against the model and attaches it as
`model.kv_cache_config`; generation and evaluation then build the cache with
`compressor.kvcache.make_cache(model)` (or run under `kv_cache_in_generate(model)`). It combines
with weight stages in one recipe:

    stages:
      - {method: gptq, bits: 4, group_size: 128}
      - {method: kivi, bits: 2, group_size: 32, residual: 64}
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compressor.engine.kvcache import KV_BITS, check_cache_config, head_dim_of
from compressor.engine.recipe import StageConfig
from compressor.engine.registry import register
from compressor.errors import RecipeError


def _positive_int(cfg, name: str, *, zero_ok: bool = False, example: str = "") -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and not zero_ok):
        lowest = "0 or more" if zero_ok else "a positive integer"
        raise RecipeError(name, v, f"use {lowest}{', e.g. ' + example if example else ''}", cfg.method)


@dataclass
class KiviConfig(StageConfig):
    """KIVI quantized KV cache: keys per channel, values per token, recent tokens in fp16.

    Args:
        bits: 2, 4 or 8 bits per cached key/value element.
        group_size: tokens per key group (one scale per channel and group) and channels per value
            group; must divide the model's head_dim.
        residual: most recent tokens kept in fp16 (KIVI's R), 0 or more. Keys leave the window in
            whole groups, so up to residual + group_size - 1 key tokens wait in fp16.
    """

    bits: int = 2
    group_size: int = 32
    residual: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.bits, bool) or self.bits not in KV_BITS:
            raise RecipeError("bits", self.bits, f"choose one of {KV_BITS}", self.method)
        _positive_int(self, "group_size", example="32 or 64")
        if self.group_size % 8:
            raise RecipeError("group_size", self.group_size, "use a multiple of 8 (keys pack whole bytes per "
                              "group at 2/4 bits), e.g. 32 or 64", self.method)
        _positive_int(self, "residual", zero_ok=True, example="64")


@dataclass
class GearConfig(KiviConfig):
    """GEAR: KIVI-style quantized backbone + low-rank residual + exact sparse outliers.

    Args:
        rank: rank of the per-head approximation of the quantization residual of each chunk.
        outliers: percent of entries per head and chunk kept exactly (largest deviations).
        chunk: tokens compressed together (low-rank and outliers are per chunk); a multiple of
            group_size. Prompts longer than residual + chunk are compressed in one larger chunk.
    """

    rank: int = 2
    outliers: float = 2.0
    chunk: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "rank", zero_ok=True, example="2 or 4")
        if isinstance(self.outliers, bool) or not isinstance(self.outliers, (int, float)) \
                or not 0 <= self.outliers <= 50:
            raise RecipeError("outliers", self.outliers, "give a percent in [0, 50], e.g. 2", self.method)
        _positive_int(self, "chunk", example="64")
        if self.chunk % self.group_size:
            raise RecipeError("chunk", self.chunk, f"use a multiple of group_size {self.group_size}", self.method)


@dataclass
class StreamingConfig(StageConfig):
    """StreamingLLM eviction baseline: attention-sink tokens + a sliding window, the rest dropped.

    Args:
        sinks: first tokens kept forever (the attention sinks), e.g. 4.
        window: most recent tokens kept.
    """

    sinks: int = 4
    window: int = 124

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "sinks", zero_ok=True, example="4")
        _positive_int(self, "window", example="124")


def _attach(model: nn.Module, cfg: StageConfig, ctx=None) -> None:
    config = model.config.get_text_config(decoder=True)
    check_cache_config(cfg, head_dim_of(config))
    model.kv_cache_config = cfg


@register("kivi", KiviConfig, kind="kv")
def apply_kivi(model: nn.Module, cfg: KiviConfig, ctx=None) -> None:
    _attach(model, cfg, ctx)


@register("gear", GearConfig, kind="kv")
def apply_gear(model: nn.Module, cfg: GearConfig, ctx=None) -> None:
    _attach(model, cfg, ctx)


@register("streaming", StreamingConfig, kind="kv")
def apply_streaming(model: nn.Module, cfg: StreamingConfig, ctx=None) -> None:
    _attach(model, cfg, ctx)
