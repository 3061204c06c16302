"""Method registry: method name -> config class, apply function, whether it needs calibration.

A method file in `compressor/engine/methods/` registers its apply function:

    @register("rtn", RTNConfig)                                   # calibration-free
    def apply(model: nn.Module, cfg: RTNConfig, ctx: StageContext) -> None: ...

    @register("gptq", GPTQConfig, needs_calibration=True)         # sequential, once per decoder layer
    def apply(layer_ctx: LayerContext, cfg: GPTQConfig) -> None: ...

`kind` says what the stage does to the modules it targets, and decides which stacks are valid:
"quantize" (weights become packed integers or low-bit floats), "prune", "lowrank", "kv" (KV cache)
and "distill". `StageContext` lives in compressor/engine/compress.py, `LayerContext` in compressor/engine/sequential.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("quantize", "prune", "lowrank", "kv", "distill")


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Args:
        name: the recipe's `method` value ("rtn", "gptq", ...).
        config_cls: the StageConfig subclass holding its parameters.
        apply: `apply(model, cfg, ctx)` when needs_calibration is False, else `apply(layer_ctx, cfg)`.
        needs_calibration: run in the sequential layer-by-layer pipeline on calibration tokens.
        kind: one of KINDS.
    """

    name: str
    config_cls: type
    apply: Callable
    needs_calibration: bool = False
    kind: str = "quantize"


METHODS: dict[str, MethodSpec] = {}


def register(name: str, config_cls: type, *, needs_calibration: bool = False, kind: str = "quantize"):
    """Decorator on a method's apply function; also sets `config_cls.method = name`."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")

    def decorate(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].apply is not fn:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].apply.__module__}, {fn.__module__})")
        config_cls.method = name
        METHODS[name] = MethodSpec(name, config_cls, fn, needs_calibration, kind)
        return fn

    return decorate


_LOADED = False


def load_methods() -> dict[str, MethodSpec]:
    """Import every module in compressor/engine/methods/ once (import errors are raised, never swallowed)."""
    global _LOADED
    if not _LOADED:
        from compressor.engine import methods

        for info in sorted(pkgutil.iter_modules(methods.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"compressor.engine.methods.{info.name}")
        _LOADED = True
    return METHODS


def get_method(name: str, stage: str | None = None) -> MethodSpec:
    """The spec registered under `name`; RecipeError listing the known methods otherwise."""
    from compressor.errors import RecipeError

    specs = load_methods()
    if name not in specs:
        raise RecipeError("method", name, f"known methods are {', '.join(sorted(specs))}", stage)
    return specs[name]
