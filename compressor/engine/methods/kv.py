"""KV-cache stages: KIVI, GEAR and StreamingLLM eviction (see compressor/engine/kvcache/ for the papers).

A KV stage changes no weight. Its apply checks the config against the model and attaches it as
`model.kv_cache_config`; generation and evaluation then build the cache with
`compressor.engine.kvcache.make_cache(model)` (or run under `kv_cache_in_generate(model)`), which asks
the config for one cache layer per decoder layer (`cache_layer`). It combines with weight stages in
one recipe:

    stages:
      - {method: gptq, bits: 4, group_size: 128}
      - {method: kivi, bits: 2, group_size: 32, residual: 64}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from compressor.engine.kvcache import (
    KV_BITS,
    QuantizedLayer,
    SinkWindowLayer,
    check_cache_config,
    head_dim_of,
)
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError


def _positive_int(cfg, name: str, *, zero_ok: bool = False, example: str = "") -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (v == 0 and not zero_ok):
        lowest = "0 or more" if zero_ok else "a positive integer"
        raise RecipeError(name, v, f"use {lowest}{', e.g. ' + example if example else ''}", cfg.method)


@dataclass
class KVStageConfig(StageConfig):
    """Base of the KV-cache stage configs: they build the cache layers generation runs with."""

    kind: ClassVar[str] = "kv"

    def cache_layer(self, pad: torch.Tensor | None = None):
        """A fresh cache layer (compressor.engine.kvcache) for one decoder layer; `pad`: [B] leading pad
        tokens per row of a left-padded batch (only eviction needs it)."""
        raise NotImplementedError

    def check_head_dim(self, head_dim: int) -> None:
        """Raise RecipeError when this config cannot run on a model with this head_dim."""

    def exact_window(self) -> tuple[int, str]:
        """(tokens a generation holds before this cache compresses or evicts any, how the config keeps
        them). A generation that fits in the window runs exactly as without the stage."""
        raise NotImplementedError

    def stress_fix(self, tokens: int) -> str:
        """What to change so that a generation of `tokens` tokens tests the cache (HTML, fields as code)."""
        raise NotImplementedError


@dataclass
class KiviConfig(KVStageConfig):
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

    def label(self) -> str:
        return f"{self.method} {self.bits}-bit g{self.group_size}"

    def exact_window(self) -> tuple[int, str]:
        return self.residual, f"the last residual={self.residual} tokens in fp16"

    def stress_fix(self, tokens: int) -> str:
        return "Set <code>residual: 0</code> to stress-test the compressed cache."

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.bits, bool) or self.bits not in KV_BITS:
            raise RecipeError("bits", self.bits, f"choose one of {KV_BITS}", self.method)
        _positive_int(self, "group_size", example="32 or 64")
        if self.group_size % 8:
            raise RecipeError("group_size", self.group_size, "use a multiple of 8 (keys pack whole bytes per "
                              "group at 2/4 bits), e.g. 32 or 64", self.method)
        _positive_int(self, "residual", zero_ok=True, example="64")

    def cache_layer(self, pad: torch.Tensor | None = None) -> QuantizedLayer:
        return QuantizedLayer(self.bits, self.group_size, self.residual)

    def check_head_dim(self, head_dim: int) -> None:
        if head_dim % self.group_size:  # values are grouped along the channels of a head
            divs = [g for g in (8, 16, 32, 64, 128) if head_dim % g == 0 and g <= head_dim]
            raise RecipeError("group_size", self.group_size, f"values are grouped along head_dim {head_dim}, so "
                              f"the group size must divide it: try {', '.join(map(str, divs))}", self.method)


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

    def cache_layer(self, pad: torch.Tensor | None = None) -> QuantizedLayer:
        return QuantizedLayer(self.bits, self.group_size, self.residual, rank=self.rank,
                              outlier_ratio=self.outliers / 100, key_chunk=self.chunk, value_chunk=self.chunk)


@dataclass
class StreamingConfig(KVStageConfig):
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

    def cache_layer(self, pad: torch.Tensor | None = None) -> SinkWindowLayer:
        return SinkWindowLayer(self.sinks, self.window, pad)

    def label(self) -> str:
        return f"{self.method} {self.sinks}+{self.window}"

    def exact_window(self) -> tuple[int, str]:
        kept = self.sinks + self.window
        return kept, f"sinks + window = {kept} tokens"

    def stress_fix(self, tokens: int) -> str:
        return f"Make sinks + window smaller than {tokens} to stress-test eviction."


def attach(cfg: KVStageConfig, ctx) -> None:
    """Check the config against the model's head_dim and attach it as `model.kv_cache_config`."""
    check_cache_config(cfg, head_dim_of(ctx.model.config.get_text_config(decoder=True)))
    ctx.model.kv_cache_config = cfg


register("kivi", KiviConfig)(attach)
register("gear", GearConfig)(attach)
register("streaming", StreamingConfig)(attach)
