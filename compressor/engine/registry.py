"""Method registry: method name -> config class and apply function.

A method is one file in `compressor/engine/methods/`: a config dataclass that says everything
method-specific (its `kind`, `needs_calibration`, `needs_teacher`, `traits()`, a KV stage's
`cache_layer()`, ...; see StageConfig in compressor/engine/recipe.py), pure tensor functions, and one
registered apply with the one signature every method has:

    @register("rtn", RTNConfig)
    def apply(cfg: RTNConfig, ctx) -> None: ...

`ctx` is a StageContext (the whole model, once) or, when the config `needs_calibration`, a
LayerContext (once per decoder layer on calibration data); both have the same surface
(compressor/engine/context.py). The name given to `register` is the method's only spelling.

`kind` says what a stage does to the modules it targets, and decides which stacks are valid:
"quantize" (weights become packed integers or low-bit floats), "prune", "lowrank", "kv" (KV cache)
and "distill".
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("quantize", "prune", "lowrank", "kv", "distill")


@dataclass(frozen=True)
class MethodSpec:
    """One registered method; what it needs is read from its config class.

    Args:
        name: the recipe's `method` value ("rtn", "gptq", ...).
        config_cls: the StageConfig subclass holding its parameters and declarations.
        apply: `apply(cfg, ctx)`.
    """

    name: str
    config_cls: type
    apply: Callable

    @property
    def kind(self) -> str:
        return self.config_cls.kind

    @property
    def needs_calibration(self) -> bool:
        """Runs in the sequential layer-by-layer pipeline on calibration tokens (LayerContext)."""
        return self.config_cls.needs_calibration

    @property
    def needs_teacher(self) -> bool:
        """Gets a frozen copy of the model before stage 0 (`ctx.teacher`) and the calibration tokens."""
        return self.config_cls.needs_teacher


METHODS: dict[str, MethodSpec] = {}


def register(name: str, config_cls: type):
    """Decorator on a method's `apply(cfg, ctx)`; sets `config_cls.method = name`."""
    kind = getattr(config_cls, "kind", None)
    if kind not in KINDS:
        raise ValueError(f"{config_cls.__name__}.kind={kind!r} is not one of {KINDS}")

    def decorate(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].apply is not fn:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].apply.__module__}, {fn.__module__})")
        config_cls.method = name
        METHODS[name] = MethodSpec(name, config_cls, fn)
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
