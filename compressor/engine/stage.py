"""A stage of a recipe: the config base classes every method's config derives from.

Module selection (shared by every stage, resolved by `StageConfig.override_for`):
  - `targets`: a regex searched (`re.search`) in each linear layer's qualified name;
  - `ignore`: regexes of names left alone; by default `lm_head` and embeddings;
  - `overrides`: `{pattern, <field>: value, ..., skip?}` entries, applied in order to the modules whose
    name the pattern matches (later entries win): per-module bits, group size, or skip (mixed precision).

Field values are checked in `__post_init__` (bits out of range, bad regex, ...); checks against a
model are `check_module` here and `Recipe.check` (compressor/engine/recipe.py).

What is method-specific lives on the config class, never in a switch on method names: `kind`,
`needs_calibration`, `needs_teacher` (class attributes), `traits()` (formats that change how kernels
behave, for reports and hardware projections), `label()` (a short name for tables), the stacking
declarations (`final_format`, `linear_children`, `check_stack`) and, for KV stages, `cache_layer()`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from compressor.engine.registry import get_method, load_methods
from compressor.errors import RecipeError

# Left alone unless the recipe says otherwise: output head and embeddings (GPT-NeoX calls its head embed_out).
DEFAULT_IGNORE = (r"(^|\.)lm_head$", r"(^|\.)embed")
# Kinds whose stages rewrite the weights of the linear layers they target.
WEIGHT_KINDS = ("quantize", "prune", "lowrank")
# Kinds whose stages find their modules as nn.Linear (distill trains them); "kv" acts on the cache.
LINEAR_KINDS = (*WEIGHT_KINDS, "distill")
# compressor.engine.modules.LowRankLinear: its nn.Linear factors, `down` [r, K] then `up` [N, r].
LOWRANK_CHILDREN = ("down", "up")
# How to stack on a quantized module (the default final format of the "quantize" kind).
QUANTIZED = ("quantized weights", "they are already quantized: quantize each module once (use overrides "
             "for mixed precision) and put prune, low-rank and distill stages before quantization")
_SELECTION_FIELDS = ("targets", "ignore", "overrides")


# The smallest group a fallback takes before it gives up on groups and uses one scale per output channel.
MIN_FALLBACK_GROUP = 16


def fallback_group(in_features: int, group_size: int) -> int:
    """The group size a layer of `in_features` gets when `group_size` does not divide it: the largest power of
    two below `group_size` (down to MIN_FALLBACK_GROUP) that divides it, else in_features (per channel).

    Why a per-layer fallback and not a ragged last group: llama.cpp does the same (its quantizer switches
    a tensor whose rows do not split into 256-element K-quant blocks to a type with 32-element blocks),
    and a smaller power-of-two group stays in the one weight format every kernel (CPU int4pack, Triton)
    and every export (GGUF blocks of 32, compressed-tensors) already takes. SmolLM2's 576 columns at
    group 128 get group 64: 9 groups per row instead of 4.5, 0.25 more bits per weight for the scales.
    """
    g = 1 << (max(group_size - 1, 1).bit_length() - 1)  # the largest power of two below group_size
    while g >= MIN_FALLBACK_GROUP:
        if in_features % g == 0:
            return g
        g //= 2
    return in_features


def _layer_pattern(names: list[str]) -> str:
    """Module names folded by their layer index: "model.layers.[0-29].{self_attn.q_proj, mlp.up_proj}"."""
    groups: dict[tuple[str, str], list[int]] = {}
    loose = []
    for name in names:
        m = re.match(r"^(.*?\.)(\d+)\.(.*)$", name)
        if m:
            groups.setdefault((m.group(1), m.group(3)), []).append(int(m.group(2)))
        else:
            loose.append(name)
    by_layers: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for (prefix, suffix), idx in groups.items():
        by_layers.setdefault((prefix, tuple(sorted(idx))), []).append(suffix)
    parts = []
    for (prefix, idx), suffixes in by_layers.items():
        span = f"{idx[0]}-{idx[-1]}" if list(idx) == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1 else \
            ",".join(map(str, idx))
        inner = suffixes[0] if len(suffixes) == 1 else "{" + ", ".join(suffixes) + "}"
        parts.append(f"{prefix}[{span}].{inner}")
    return ", ".join(parts + loose)


def divisor_hint(in_features: int, limit: int = 6) -> str:
    """Group sizes that would work for `in_features`, for error messages: the powers of two the kernels
    and export formats take first (largest first), then other multiples of 16."""
    pow2 = [g for g in (256, 128, 64, 32, 16) if g < in_features and in_features % g == 0]
    other = [d for d in range(16, in_features, 16) if in_features % d == 0 and d not in pow2]
    divs = (pow2 + other)[:limit]
    return f"try {', '.join(map(str, divs))} or -1 (per channel)" if divs else "try -1 (per channel)"


def _compile(field_name: str, pattern: Any, stage: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise RecipeError(field_name, pattern, "give a regular expression as a string", stage)
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RecipeError(field_name, pattern, f"not a valid regular expression ({e})", stage) from None


@dataclass
class StageConfig:
    """Base of every method's config: which linear layers the stage acts on.

    `@register(name, Config)` sets the `method` ClassVar. A subclass declares what sets its method
    apart as class attributes (`kind`, `needs_calibration`, `needs_teacher`) and by overriding the
    hooks below (`traits`, `final_format`, `linear_children`, `check_stack`, `check_module`).
    Subclasses that override `__post_init__` call `super().__post_init__()` first.

    Args:
        targets: regex searched in qualified module names; default every linear layer.
        ignore: regexes of modules left alone; default lm_head and embeddings.
        overrides: list of {pattern, <field>: value, skip: bool}, applied in order to matching modules.
    """

    method: ClassVar[str] = ""
    # One of compressor.engine.registry.KINDS: what the stage does to its targets.
    kind: ClassVar[str] = "quantize"
    # Run layer by layer on calibration tokens (apply gets a LayerContext) instead of once on the model.
    needs_calibration: ClassVar[bool] = False
    # Gets ctx.teacher (a frozen copy of the model before stage 0) and ctx.calibration (tokens [n, L]).
    needs_teacher: ClassVar[bool] = False

    targets: str = r".*"
    ignore: list[str] = field(default_factory=lambda: list(DEFAULT_IGNORE))
    overrides: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        stage = self.method or type(self).__name__
        self._targets_re = _compile("targets", self.targets, stage)
        if isinstance(self.ignore, str):
            self.ignore = [self.ignore]
        if not isinstance(self.ignore, (list, tuple)):
            raise RecipeError("ignore", self.ignore, "give a list of regular expressions", stage)
        self.ignore = list(self.ignore)
        self._ignore_re = [_compile("ignore", p, stage) for p in self.ignore]
        if not isinstance(self.overrides, (list, tuple)):
            raise RecipeError("overrides", self.overrides, "give a list of {pattern, field: value} entries", stage)
        self.overrides = [dict(o) if isinstance(o, dict) else o for o in self.overrides]
        allowed = {f.name for f in dataclasses.fields(self)} - set(_SELECTION_FIELDS)
        self._override_re = []
        for o in self.overrides:
            if not isinstance(o, dict) or "pattern" not in o:
                raise RecipeError("overrides", o, "each override is a mapping with a 'pattern' key, "
                                  "e.g. {pattern: 'down_proj', bits: 8} or {pattern: 'layers\\.0\\.', skip: true}", stage)
            unknown = set(o) - allowed - {"pattern", "skip"}
            if unknown:
                raise RecipeError("overrides", o, f"unknown key(s) {sorted(unknown)}: an override may set "
                                  f"pattern, skip, {', '.join(sorted(allowed))}", stage)
            if not isinstance(o.get("skip", False), bool):
                raise RecipeError("overrides.skip", o["skip"], "use true or false", stage)
            self._override_re.append(_compile("overrides.pattern", o["pattern"], stage))
            values = {k: v for k, v in o.items() if k not in ("pattern", "skip")}
            if values:  # validate the values now, not at the first matching module
                dataclasses.replace(self, overrides=[], **values)

    def override_for(self, name: str) -> StageConfig | None:
        """This config with `name`'s overrides applied, or None when the module is not acted on."""
        if not self._targets_re.search(name) or any(r.search(name) for r in self._ignore_re):
            return None
        values: dict = {}
        for o, r in zip(self.overrides, self._override_re, strict=True):
            if r.search(name):
                if o.get("skip", False):
                    return None
                values.update({k: v for k, v in o.items() if k not in ("pattern", "skip")})
        return dataclasses.replace(self, **values) if values else self

    def resolve(self, root: nn.Module, prefix: str = "") -> dict[str, nn.Linear]:
        """The nn.Linear modules under `root` this stage acts on, by qualified name (`prefix.name`)."""
        out = {}
        for name, mod in root.named_modules():
            full = ".".join(p for p in (prefix, name) if p)
            if isinstance(mod, nn.Linear) and self.override_for(full) is not None:
                out[full] = mod
        return out

    def check_module(self, name: str, module: nn.Linear) -> None:
        """Raise RecipeError when this (override-applied) config cannot act on `module`."""

    def final_format(self, kind: str | None = None) -> tuple[str, str] | None:
        """(what the targets are stored as, how to stack on it) when this stage leaves them as modules
        that are not nn.Linear, which later stages would silently skip; None when they stay nn.Linear.

        "quantize" stages leave packed modules (compressor/engine/packed.py). Configs whose output
        depends on a field override this (SparsityConfig: storage "compact"). `kind` defaults to the
        config's own.
        """
        return QUANTIZED if (kind or self.kind) == "quantize" else None

    def linear_children(self, kind: str | None = None) -> tuple[str, ...]:
        """Names of the nn.Linear children of the module this stage puts in place of a target (later
        stages find `<name>.<child>`), or () when the target itself stays an nn.Linear or is final."""
        return LOWRANK_CHILDREN if (kind or self.kind) == "lowrank" else ()

    def check_stack(self, earlier: list[StageConfig], where: str) -> None:
        """Raise RecipeError when this stage cannot follow the `earlier` stages of its recipe."""

    def plan_warnings(self, model: nn.Module) -> list[str]:
        """Warnings about how this stage will act on `model` as it is now (a meta-device model will do):
        things done other than asked, such as a smaller group size for layers the asked one does not fit.
        Read by preflights and written into the report when the stage runs."""
        return []

    def traits(self) -> tuple[set[str], float | None]:
        """(formats the stage leaves that change how kernels behave, the lowest weight bit width it
        stores or None): read by reports and hardware projections (compressor.measure.hardware). The
        trait names are "weight-only-int", "int4-weight-only", "int8-dynamic", "fp8", "nf4", "sparse-2:4"."""
        return set(), None

    def override_values(self, key: str) -> list:
        """The values overrides give `key` (for declarations that depend on a per-module field)."""
        return [o[key] for o in self.overrides if key in o and not o.get("skip", False)]

    def label(self) -> str:
        """A short name for tables and run names ("rtn w4 g128", "sparsegpt 50%"); the method by default."""
        return self.method

    def to_dict(self) -> dict:
        return {"method": self.method, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


@dataclass
class QuantStageConfig(StageConfig):
    """Base of integer weight quantization configs.

    Args:
        bits: weight bits; `SUPPORTED_BITS` lists what the method can do.
        group_size: columns sharing one scale and zero; -1 = one per output channel. A layer whose
            in_features it does not divide gets a smaller group (see group_fallback).
        symmetric: zero fixed at 2**(bits-1) (True) or a per-group zero point (False).
        group_fallback: when group_size does not divide a layer's in_features (SmolLM2's 576 at 128),
            give that layer the largest power of two below group_size that does (64), or one scale per
            channel, and name those layers in a report warning (as llama.cpp does); false refuses the
            recipe instead.
    """

    SUPPORTED_BITS: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)

    bits: int = 4
    group_size: int = 128
    symmetric: bool = False
    group_fallback: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if isinstance(self.bits, bool) or self.bits not in self.SUPPORTED_BITS:
            raise RecipeError("bits", self.bits, f"choose one of {self.SUPPORTED_BITS}", stage)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or \
                (self.group_size <= 0 and self.group_size != -1):
            raise RecipeError("group_size", self.group_size,
                              "use a positive group size such as 32, 64 or 128, or -1 for per channel", stage)
        for name in ("symmetric", "group_fallback"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(name, getattr(self, name), "use true or false", stage)

    def traits(self) -> tuple[set[str], float | None]:
        """Integer weight-only formats; the lowest bits counts the per-module overrides too."""
        bits = min([self.bits, *self.override_values("bits")])
        return ({"weight-only-int", "int4-weight-only"} if bits <= 4 else {"weight-only-int"}), float(bits)

    def label(self) -> str:
        return f"{self.method} w{self.bits} " + ("per-channel" if self.group_size == -1 else f"g{self.group_size}")

    def group_for(self, in_features: int) -> int:
        """The group size in columns for a layer of `in_features` (per channel -> in_features), after the
        fallback when group_size does not divide it (`fallback_group`)."""
        if self.group_size == -1:
            return in_features
        if in_features % self.group_size and self.group_fallback:
            return fallback_group(in_features, self.group_size)
        return self.group_size

    def check_module(self, name: str, module: nn.Linear) -> None:
        k = module.in_features
        if k % self.group_for(k):
            raise RecipeError("group_size", self.group_size,
                              f"group size must divide in_features {k} of {name}: {divisor_hint(k)}, or set "
                              "group_fallback: true to let such layers take a smaller group", self.method)

    def plan_warnings(self, model: nn.Module) -> list[str]:
        """One warning per (in_features, group size) whose layers take a fallback group, naming them."""
        fallen: dict[tuple[int, int, int], list[str]] = {}
        for name, module in self.resolve(model).items():
            c = self.override_for(name)
            k = module.in_features
            if c.group_size > 0 and k % c.group_size:
                fallen.setdefault((k, c.group_size, c.group_for(k)), []).append(name)
        return [f"group_size={g} does not divide in_features {k} of {len(names)} layer(s) "
                f"({_layer_pattern(names)}): they use " + (f"group_size={got}" if got != k else
                                                           "one scale per output channel (no smaller group divides)")
                + " (group_fallback; set it to false to refuse instead)"
                for (k, g, got), names in fallen.items()]


def stage_from_dict(d: dict, index: int | None = None) -> StageConfig:
    """Build a stage config from {"method": name, field: value, ...}."""
    where = f"stage {index}" if index is not None else None
    if not isinstance(d, dict):
        raise RecipeError("stage", d, "each stage is a mapping like {method: rtn, bits: 4}", where)
    d = dict(d)
    method = d.pop("method", None)
    if method is None:
        raise RecipeError("method", None, f"each stage needs a method: one of {', '.join(sorted(load_methods()))}",
                          where)
    spec = get_method(method, where)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise RecipeError(unknown[0], d[unknown[0]], f"{method} has the fields {', '.join(sorted(fields))}",
                          where or method)
    try:
        return spec.config_cls(**d)
    except RecipeError:
        raise
    except (TypeError, ValueError) as e:  # a config's own checks written without RecipeError
        raise RecipeError("stage", d, str(e), method) from e
