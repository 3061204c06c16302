"""Recipes: an ordered list of stage configs, one `@dataclass` per method, saved as YAML or JSON.

    stages:
      - method: gptq
        bits: 4
        group_size: 128
        overrides:
          - {pattern: "mlp\\.down_proj", bits: 8}
          - {pattern: "layers\\.0\\.", skip: true}

Each stage is a config from compressor/engine/stage.py (module selection, per-module overrides).

Input is bounded first (compressor/engine/bounds.py: text size, YAML aliases, values, nesting, stage
count, regex patterns), before anything is expanded or built.
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

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from compressor.engine import bounds
from compressor.engine.presets import list_presets, preset_stages
from compressor.engine.stage import (
    DEFAULT_IGNORE,
    LINEAR_KINDS,
    WEIGHT_KINDS,
    StageConfig,
    stage_from_dict,
)
from compressor.errors import RecipeError


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

    def label(self) -> str:
        """The recipe named by its stages: "rtn w4 g128 + kivi 2-bit g32"."""
        return " + ".join(s.label() for s in self.stages)

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict | list) -> Recipe:
        """{"stages": [...]}, a single stage {"method": ...}, or a list of stages, within the bounds of
        compressor/engine/bounds.py."""
        bounds.check_shape(d)
        if isinstance(d, list):
            stages = d
        elif isinstance(d, dict) and "stages" in d:
            stages = d["stages"]
            if not isinstance(stages, list):
                raise RecipeError("stages", stages, "give a list of stages")
        elif isinstance(d, dict):
            stages = [d]  # a single stage
        else:
            raise RecipeError("recipe", type(d).__name__, "give {stages: [{method: ..., ...}, ...]} or a single "
                              "stage {method: ...}")
        bounds.check_recipe_data(stages)
        return cls([stage_from_dict(s, i) for i, s in enumerate(stages)])

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            return cls.from_dict(bounds.parse_recipe_json(text))
        except json.JSONDecodeError as e:
            raise RecipeError("recipe", text[:80], f"not valid JSON ({e})") from None
        except RecipeError:
            raise
        except ValueError as e:  # an integer of thousands of digits
            raise RecipeError("recipe", text[:80], f"holds a value that cannot be read ({str(e)[:120]})") from None

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        return cls.from_dict(bounds.parse_recipe_text(text))

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


def load_recipe(x: Any, files: bool = True) -> Recipe:
    """A Recipe from a preset name, YAML/JSON text, a dict, a list, a stage config or a Recipe, and with
    `files` (the CLI, scripts) a .yaml/.json path. A run request never reads files (`files=False`):
    text from a visitor must not name a file on the server."""
    if isinstance(x, Recipe):
        return x
    if isinstance(x, StageConfig):
        return Recipe([x])
    if isinstance(x, (dict, list)):
        return Recipe.from_dict(x)
    looks_like_path = isinstance(x, Path) or (isinstance(x, str) and "\n" not in x and len(x) < 4096
                                              and x.strip().endswith((".yaml", ".yml", ".json")))
    if looks_like_path and files:
        text = bounds.read_recipe_file(x)
        return Recipe.from_json(text) if Path(x).suffix == ".json" else Recipe.from_yaml(text)
    if looks_like_path:
        raise RecipeError("recipe", Path(x).name, "a run request takes the recipe itself (a preset name, YAML or "
                          "JSON), not a file name: paste the file's text")
    if isinstance(x, str):
        bounds.check_text_size(x)
        if x.strip() in list_presets():
            return get_preset(x.strip())
        text = x.strip()
        if not text:
            raise RecipeError("recipe", x, f"empty: give a preset name ({', '.join(list_presets())}) or YAML/JSON")
        if text.startswith(("{", "[")):
            try:
                return Recipe.from_dict(bounds.parse_recipe_json(text))
            except json.JSONDecodeError:
                pass  # YAML flow style, e.g. "{method: rtn, bits: 4}": YAML reads JSON and more
            except ValueError as e:  # an integer of thousands of digits (RecipeError is a ValueError too)
                if isinstance(e, RecipeError):
                    raise
                raise RecipeError("recipe", text[:80], f"holds a value that cannot be read ({str(e)[:120]})") from None
        try:
            data = bounds.parse_recipe_text(text)
        except RecipeError as e:
            if e.field != "recipe" or "not valid JSON or YAML" not in e.hint:
                raise
            raise RecipeError("recipe", text[:80], f"not a preset name (known: {', '.join(list_presets())}), and "
                              f"{e.hint}") from None
        if isinstance(data, (dict, list)):
            return Recipe.from_dict(data)
        raise RecipeError("recipe", text[:80], f"not a preset name (known: {', '.join(list_presets())}), "
                          "a .yaml/.json file, or YAML/JSON text")
    raise RecipeError("recipe", type(x).__name__, "give a preset name, YAML/JSON text, a path, a dict or a list")
