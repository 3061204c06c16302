"""Checks before work: a model spec and a recipe checked against each other in seconds, before any weight
is loaded or any baseline measured.

    pre = preflight("smollm2-135m", "gptq-w4-g128")   # ModelLoadError / RecipeError, or:
    pre.warnings     ["stage 0 (gptq): group_size=128 does not divide in_features 576 of 180 layer(s) ..."]
    pre.source       "from a Q4_1 GGUF, dequantized"

What runs, in order, each step only when the one before passed:
  1. the spec is resolved and its config read alone: config.json, or a GGUF file's header (milliseconds,
     compressor/models/gguf_file.py); a catalog model that is not converted yet is read from its package;
  2. the config is checked for absurd values (compressor/models/sanity.py: layer count, sizes, heads);
  3. the model is built on the meta device (no memory, no weights) and its parameters counted; a model
     that cannot fit in free memory is refused with the numbers;
  4. `Recipe.check` runs against that module tree (group sizes, regexes, stacking), KV stages are checked
     against the head size, and each stage's `plan_warnings` say what it will do other than asked.

The engine checks the recipe again on the loaded model (`compress` calls `Recipe.check`), so a preflight
is an early answer, not the only one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressor.models.loading import check_fits, resolve


@dataclass
class Preflight:
    """What a preflight found; every field is plain data but `info` (the resolved spec, with its config
    and meta-device model)."""

    spec: str
    architecture: str
    n_params: int
    shape: dict  # layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, max_positions, tied
    source: str | None  # "from a Q4_1 GGUF, dequantized", or None for a plain checkpoint
    targets: list[int]  # modules each stage acts on (0 for KV and distill stages)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    info: Any = field(default=None, repr=False, compare=False)


def _shape(config) -> dict:
    text = config.get_text_config()
    heads = getattr(text, "num_attention_heads", None)
    return {"layers": getattr(text, "num_hidden_layers", None), "hidden": getattr(text, "hidden_size", None),
            "intermediate": getattr(text, "intermediate_size", None), "heads": heads,
            "kv_heads": getattr(text, "num_key_value_heads", None) or heads,
            "head_dim": getattr(text, "head_dim", None) or (text.hidden_size // heads if heads else None),
            "vocab": getattr(text, "vocab_size", None), "max_positions": getattr(text, "max_position_embeddings", None),
            "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False))}


def check_recipe(recipe, model: torch.nn.Module) -> tuple[list[int], list[str]]:
    """`Recipe.check` on `model` (a meta-device model will do) plus the KV stages' head-size check;
    returns (modules per stage, warnings). RecipeError for the first problem."""
    from compressor.engine.kvcache import check_cache_config, head_dim_of
    from compressor.engine.recipe import load_recipe

    recipe = load_recipe(recipe)
    targets = recipe.check(model)
    warnings = []
    head_dim = head_dim_of(model.config.get_text_config(decoder=True))
    for i, cfg in enumerate(recipe.stages):
        if cfg.kind == "kv":
            check_cache_config(cfg, head_dim)
        warnings += [f"stage {i} ({cfg.method}): {w}" for w in cfg.plan_warnings(model)]
    return [len(t) for t in targets], warnings


def preflight(spec: str, recipe, *, allow_pickle: bool = False, trust_remote_code: bool = False,
              dtype: torch.dtype = torch.float32, roots: list[Path] | None = None,
              available_memory: int | None = None) -> Preflight:
    """Check `spec` and `recipe` (anything `load_recipe` takes) against each other without loading
    weights. Raises ModelLoadError (the spec, its config, memory) or RecipeError (the recipe on this
    model's shapes), each naming the problem and the fix; returns what it found otherwise."""
    t0 = time.perf_counter()
    info = resolve(spec, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, dtype=dtype, roots=roots)
    check_fits(info, available_memory)
    targets, warnings = check_recipe(recipe, info.meta_model)
    return Preflight(spec=info.spec, architecture=info.architecture, n_params=info.n_params,
                     shape=_shape(info.config), source=info.source_note, targets=targets, warnings=warnings,
                     seconds=time.perf_counter() - t0, info=info)
