"""Recipes: an ordered list of stage configs, one `@dataclass` per method, saved as YAML or JSON.

    stages:
      - method: gptq
        bits: 4
        group_size: 128
        overrides:
          - {pattern: "mlp\\.down_proj", bits: 8}
          - {pattern: "layers\\.0\\.", skip: true}

Module selection (shared by every stage, resolved by `StageConfig.override_for`):
  - `targets`: a regex searched (`re.search`) in each linear layer's qualified name;
  - `ignore`: regexes of names left alone; by default `lm_head` and embeddings;
  - `overrides`: `{pattern, <field>: value, ..., skip?}` entries, applied in order to the modules whose
    name the pattern matches (later entries win): per-module bits, group size, or skip (mixed precision).

Validation happens twice: field values in `__post_init__` (bits out of range, bad regex, ...), and
against the model in `Recipe.check(model)` at compress time (group size vs each layer's in_features,
regexes that match nothing, a stage targeting modules an earlier stage left in a final format).
Every problem is a RecipeError naming the field, the value and what would work.

Stacking: stages find their targets as nn.Linear modules, so what a stage leaves in place of each
linear decides what later stages can act on. Each config declares it, and Recipe.check reads the
declarations without running anything:
  - `final_format()`: not None when the targets stop being nn.Linear (packed quantized weights,
    compact 2:4); later weight and distill stages must not target them;
  - `linear_children()`: the nn.Linear children of the replacement module (low-rank: `down`,
    `up`); later stages find `<name>.down` and `<name>.up`, not `<name>`;
  - `check_stack(earlier, where)`: refuses a position in the recipe (distill after quantization).
Everything else (dense-storage pruning, structured pruning's smaller linears, smoothing folded into
weights, distillation) leaves nn.Linear under the same name.

What else is method-specific lives on the config class too, never in a switch on method names:
`kind`, `needs_calibration`, `needs_teacher` (class attributes), `traits()` (formats that change how
kernels behave, for reports and hardware projections) and, for KV stages, `cache_layer()`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from torch import nn

from compressor.engine.presets import list_presets, preset_stages
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


def divisor_hint(in_features: int, limit: int = 6) -> str:
    """Group sizes that would work for `in_features`, for error messages."""
    divs = [d for d in range(16, in_features) if in_features % d == 0][:limit]
    tried = ", ".join(str(d) for d in divs)
    return f"try {tried} or -1 (per channel)" if divs else "try -1 (per channel)"


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

    def traits(self) -> tuple[set[str], float | None]:
        """(formats the stage leaves that change how kernels behave, the lowest weight bit width it
        stores or None): read by reports and hardware projections (compressor.measure.hardware). The
        trait names are "weight-only-int", "int4-weight-only", "int8-dynamic", "fp8", "nf4", "sparse-2:4"."""
        return set(), None

    def override_values(self, key: str) -> list:
        """The values overrides give `key` (for declarations that depend on a per-module field)."""
        return [o[key] for o in self.overrides if key in o and not o.get("skip", False)]

    def to_dict(self) -> dict:
        return {"method": self.method, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


@dataclass
class QuantStageConfig(StageConfig):
    """Base of integer weight quantization configs.

    Args:
        bits: weight bits; `SUPPORTED_BITS` lists what the method can do.
        group_size: columns sharing one scale and zero; -1 = one per output channel. Must divide
            each targeted layer's in_features (checked at compress time).
        symmetric: zero fixed at 2**(bits-1) (True) or a per-group zero point (False).
    """

    SUPPORTED_BITS: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)

    bits: int = 4
    group_size: int = 128
    symmetric: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if isinstance(self.bits, bool) or self.bits not in self.SUPPORTED_BITS:
            raise RecipeError("bits", self.bits, f"choose one of {self.SUPPORTED_BITS}", stage)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or \
                (self.group_size <= 0 and self.group_size != -1):
            raise RecipeError("group_size", self.group_size,
                              "use a positive group size such as 32, 64 or 128, or -1 for per channel", stage)
        if not isinstance(self.symmetric, bool):
            raise RecipeError("symmetric", self.symmetric, "use true or false", stage)

    def traits(self) -> tuple[set[str], float | None]:
        """Integer weight-only formats; the lowest bits counts the per-module overrides too."""
        bits = min([self.bits, *self.override_values("bits")])
        return ({"weight-only-int", "int4-weight-only"} if bits <= 4 else {"weight-only-int"}), float(bits)

    def group_for(self, in_features: int) -> int:
        """The group size in columns for a layer of `in_features` (per channel -> in_features)."""
        return in_features if self.group_size == -1 else self.group_size

    def check_module(self, name: str, module: nn.Linear) -> None:
        k = module.in_features
        if k % self.group_for(k):
            raise RecipeError("group_size", self.group_size,
                              f"group size must divide in_features {k} of {name}: {divisor_hint(k)}", self.method)


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


@dataclass
class Recipe:
    """An ordered list of stages, applied one after the other by `compressor.compress`."""

    stages: list[StageConfig]

    def __post_init__(self) -> None:
        if not self.stages:
            raise RecipeError("stages", self.stages, "a recipe needs at least one stage, e.g. {method: rtn, bits: 8}")
        for i, s in enumerate(self.stages):
            if not isinstance(s, StageConfig):
                raise RecipeError("stages", s, f"stage {i} is not a stage config: build it with load_recipe")

    # --- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict | list) -> Recipe:
        """{"stages": [...]}, a single stage {"method": ...}, or a list of stages."""
        if isinstance(d, list):
            stages = d
        elif isinstance(d, dict) and "stages" in d:
            stages = d["stages"]
            if not isinstance(stages, list):
                raise RecipeError("stages", stages, "give a list of stages")
        elif isinstance(d, dict):
            stages = [d]  # a single stage
        else:
            raise RecipeError("recipe", d, "give {stages: [{method: ..., ...}, ...]} or a single stage {method: ...}")
        return cls([stage_from_dict(s, i) for i, s in enumerate(stages)])

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise RecipeError("recipe", text[:80], f"not valid JSON ({e})") from None

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError("recipe", text[:80], f"not valid YAML ({str(e).splitlines()[0]})") from None
        return cls.from_dict(data)

    def traits(self) -> tuple[list[str], float]:
        """(sorted trait names of every stage, the lowest weight bit width; 32.0 when no stage stores
        weights in fewer bits). KV stages have none: a cache's bits are counted in its bytes per token."""
        traits: set[str] = set()
        bits = 32.0
        for cfg in self.stages:
            t, b = cfg.traits()
            traits |= t
            bits = bits if b is None else min(bits, float(b))
        return sorted(traits), bits

    # --- checks against a model -------------------------------------------------------------------

    def check(self, model: nn.Module) -> list[dict[str, nn.Linear | None]]:
        """Validate every stage against `model`; returns each stage's targets (empty for kv/distill).

        Targets are resolved on the linears as each stage will find them: the model's, plus the
        nn.Linear children earlier stages declare (`linear_children`; their module is None here, the
        shape being unknown until the stage runs). Nothing is run.

        Raises RecipeError for a targets/ignore/override regex that matches nothing, a group size
        that does not divide a layer's in_features, or a stage (weight or distill) that targets
        modules an earlier stage leaves in a final format or replaces by children it does not select.
        """
        linears: dict[str, nn.Linear | None] = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        all_names = [n for n, _ in model.named_modules()]
        example = ", ".join(list(linears)[:3])
        final: dict[str, tuple[str, tuple[str, str]]] = {}  # name -> (earlier stage, (format, fix))
        parents: dict[str, tuple[str, tuple[str, ...]]] = {}  # name -> (earlier stage, its nn.Linear children)
        out = []
        for i, cfg in enumerate(self.stages):
            where = f"stage {i} ({cfg.method})"
            if cfg.kind not in LINEAR_KINDS:
                cfg.check_stack(self.stages[:i], where)
                out.append({})
                continue
            targets = {n: m for n, m in linears.items() if cfg.override_for(n) is not None}
            _check_stacking(cfg, where, targets, final, parents)
            cfg.check_stack(self.stages[:i], where)
            if cfg.kind not in WEIGHT_KINDS:  # distill trains what it finds; its runtime check says so
                out.append({})
                continue
            if not targets:
                raise RecipeError("targets", cfg.targets, "matches no linear layer of this model (after ignore and "
                                  f"skip overrides); names look like: {example}", where)
            for pattern in cfg.ignore:
                if pattern not in DEFAULT_IGNORE and not any(re.search(pattern, n) for n in [*all_names, *linears]):
                    raise RecipeError("ignore", pattern, f"matches no module of this model; names look like: {example}",
                                      where)
            for o in cfg.overrides:
                if not any(re.search(o["pattern"], n) for n in linears):
                    raise RecipeError("overrides.pattern", o["pattern"],
                                      f"matches no linear layer of this model; names look like: {example}", where)
            for name, mod in targets.items():
                c = cfg.override_for(name)
                if mod is not None:
                    c.check_module(name, mod)
                fmt, children = c.final_format(), c.linear_children()
                if fmt is not None:
                    final.setdefault(name, (where, fmt))
                elif children:
                    parents.setdefault(name, (where, children))
                    linears.update({f"{name}.{child}": None for child in children})
            out.append(targets)
        return out


def _check_stacking(cfg: StageConfig, where: str, targets: dict, final: dict, parents: dict) -> None:
    """RecipeError when `cfg` targets modules earlier stages made unreachable to it (see Recipe.check):
    left in a final format (`final`), or replaced by a module with nn.Linear children that `cfg`
    does not select, so it would act on fewer modules than it names (`parents`)."""
    hit = [n for n in targets if n in final]
    if hit:
        earlier, (fmt, fix) = final[hit[0]]
        more = f" and {len(hit) - 1} more" if len(hit) > 1 else ""
        raise RecipeError("method", cfg.method, f"would find no nn.Linear at {hit[0]}{more}: {earlier} stores them "
                          f"as {fmt}; {fix}; or leave them out of this stage with targets/ignore", where)
    lost = [n for n in targets if n in parents
            and not any(cfg.override_for(f"{n}.{child}") is not None for child in parents[n][1])]
    if lost:
        earlier, children = parents[lost[0]]
        more = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
        factors = " and ".join(f"{lost[0]}.{child}" for child in children)
        raise RecipeError("targets", cfg.targets, f"selects {lost[0]}{more} but not what {earlier} puts there: a "
                          f"module whose nn.Linear children are {factors}, which this stage would skip; let "
                          "targets/ignore/overrides match the children too (e.g. drop a '$' anchor)", where)


def get_preset(name: str) -> Recipe:
    """The Recipe of a named preset (compressor/engine/presets.py); RecipeError listing them otherwise."""
    return Recipe.from_dict({"stages": preset_stages(name)})


def load_recipe(x: Any) -> Recipe:
    """A Recipe from a preset name, a YAML/JSON string, a path, a dict, a list, a stage config or a Recipe."""
    if isinstance(x, Recipe):
        return x
    if isinstance(x, StageConfig):
        return Recipe([x])
    if isinstance(x, (dict, list)):
        return Recipe.from_dict(x)
    if isinstance(x, Path) or (isinstance(x, str) and "\n" not in x and x.strip().endswith((".yaml", ".yml", ".json"))):
        path = Path(x).expanduser()
        if not path.is_file():
            raise RecipeError("recipe", str(x), "no such recipe file: check the path")
        return Recipe.from_json(path.read_text()) if path.suffix == ".json" else Recipe.from_yaml(path.read_text())
    if isinstance(x, str):
        if x.strip() in list_presets():
            return get_preset(x.strip())
        text = x.strip()
        if not text:
            raise RecipeError("recipe", x, f"empty: give a preset name ({', '.join(list_presets())}) or YAML/JSON")
        if text.startswith(("{", "[")):
            try:
                return Recipe.from_dict(json.loads(text))
            except json.JSONDecodeError:
                pass  # YAML flow style, e.g. "{method: rtn, bits: 4}": YAML reads JSON and more
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError("recipe", text[:80], f"not a preset name (known: {', '.join(list_presets())}), and "
                              f"not valid JSON or YAML ({str(e).splitlines()[0]}): check brackets and "
                              "'key: value' pairs") from None
        if isinstance(data, (dict, list)):
            return Recipe.from_dict(data)
        raise RecipeError("recipe", x, f"not a preset name (known: {', '.join(list_presets())}), "
                          "a .yaml/.json file, or YAML/JSON text")
    raise RecipeError("recipe", type(x).__name__, "give a preset name, YAML/JSON text, a path, a dict or a list")
