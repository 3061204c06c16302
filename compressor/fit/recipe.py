"""An allocation as an ordinary recipe, and an ordinary recipe as formats per module.

The recipe is RTN with per-module overrides, readable and editable like any other:

    stages:
      - method: rtn
        bits: 4                      # the format most modules got
        group_size: 64
        overrides:
          - {pattern: '^model\\.layers\\.(2|11|28)\\.mlp\\.down_proj$', bits: 8, group_size: -1}
          - {pattern: '^model\\.layers\\.(0|5)\\.self_attn\\.k_proj$', bits: 3, group_size: 32}

one override per (format, role), naming its layers; a module left float is `skip: true`. A stage holds
at most MAX_LIST_ITEMS overrides (compressor/engine/bounds.py): past that the roles are split over
several RTN stages, each targeting its own roles, so no module is targeted twice.
"""

from __future__ import annotations

import re

from compressor.engine.bounds import MAX_LIST_ITEMS, MAX_STAGES
from compressor.engine.recipe import Recipe
from compressor.engine.stage import DEFAULT_IGNORE, QuantStageConfig
from compressor.errors import LabError
from compressor.fit.allocator import pattern_for
from compressor.fit.formats import FP, Format
from compressor.fit.sensitivity import SensitivityMap

METHOD = "rtn"
_HEAD_IGNORE = DEFAULT_IGNORE[0]  # r"(^|\.)lm_head$": left out of `ignore` when the fit quantizes the head


def _base(fmts: list[str]) -> str:
    """The stage's own format: the most common quantized one (fewest overrides)."""
    quantized = [f for f in fmts if f != FP]
    return max(set(quantized), key=lambda f: (quantized.count(f), f)) if quantized else FP


def _overrides(smap: SensitivityMap, formats: dict[str, str], roles: list[str], head: bool) -> tuple[str, list]:
    """(base format, overrides) of a stage over `roles`; `head`: the stage targets lm_head (not ignored)."""
    mods = [m for m in smap.modules if m.role in roles]
    base = _base([formats[m.name] for m in mods])
    groups: dict[tuple[str, str], list[str]] = {}
    for m in mods:
        if formats[m.name] != base and (head or m.role != "lm_head"):
            groups.setdefault((formats[m.name], m.role), []).append(m.name)
    overrides = []
    for (fmt, _role), members in sorted(groups.items()):
        entry = {"pattern": pattern_for(members)}
        entry.update({"skip": True} if fmt == FP else Format.parse(fmt).stage_fields())
        overrides.append(entry)
    return base, overrides


def _stage(smap: SensitivityMap, formats: dict[str, str], roles: list[str], targets: str | None) -> dict:
    head = any(formats[m.name] != FP for m in smap.modules if m.role == "lm_head" and m.role in roles)
    base, overrides = _overrides(smap, formats, roles, head)
    stage = {"method": METHOD, **Format.parse(base).stage_fields()}
    if targets is not None:
        stage["targets"] = targets
    if head:  # the default ignore leaves the head float
        stage["ignore"] = [p for p in DEFAULT_IGNORE if p != _HEAD_IGNORE]
    if overrides:
        stage["overrides"] = overrides
    return stage


def _chunks(smap: SensitivityMap, formats: dict[str, str], roles: list[str]) -> list[list[str]]:
    """Roles split into runs whose overrides fit one stage each."""
    def fits(rs: list[str]) -> bool:
        head = any(formats[m.name] != FP for m in smap.modules if m.role == "lm_head" and m.role in rs)
        return len(_overrides(smap, formats, rs, head)[1]) <= MAX_LIST_ITEMS

    chunks: list[list[str]] = [[]]
    for r in roles:
        if chunks[-1] and not fits([*chunks[-1], r]):
            chunks.append([])
        chunks[-1].append(r)
    return chunks


def recipe_from_formats(smap: SensitivityMap, formats: dict[str, str]) -> dict:
    """{"stages": [...]}: RTN stages giving every module of `formats` its format (missing modules: fp).

    One stage over every linear when its overrides fit, else one stage per run of roles (`targets`
    naming them; roles left all float are targeted by none). LabError when no module is quantized
    (nothing to run: the model fits as it is)."""
    formats = {m.name: formats.get(m.name, FP) for m in smap.modules}
    tied = [m.name for m in smap.modules if m.tied and formats[m.name] != FP]
    if tied:  # an RTN override on a tied head would untie it: a packed copy beside the float embedding
        raise LabError(f"{tied[0]} shares its weight with the input embedding: giving it {formats[tied[0]]} needs a "
                       "stage that quantizes the shared tensor, which this recipe writer does not emit yet; "
                       "leave it fp")
    every = list(dict.fromkeys(m.role for m in smap.modules))
    quantized = [r for r in every if any(formats[m.name] != FP for m in smap.modules if m.role == r)]
    if not quantized:
        raise LabError("every module stays float at this budget: the model fits as it is, no recipe is needed")
    if len(_chunks(smap, formats, every)) == 1:
        stages = [_stage(smap, formats, every, None)]
    else:
        stages = [_stage(smap, formats, c, "(" + "|".join(re.escape(r) for r in c) + ")$")
                  for c in _chunks(smap, formats, quantized)]
    if len(stages) > MAX_STAGES:
        raise LabError(f"this allocation needs {len(stages)} stages, more than a recipe may hold ({MAX_STAGES}): "
                       "use a smaller palette")
    Recipe.from_dict({"stages": stages})  # the recipe parses as any other would
    return {"stages": stages}


def formats_from_recipe(smap: SensitivityMap, recipe: Recipe) -> dict[str, str]:
    """Each map module's format under `recipe` (its integer quantization stages; fp when none acts on it),
    the group fallback applied as the stage would (compressor/engine/stage.py). LabError for a stage that
    is not integer weight quantization (its KL cannot be predicted from this map)."""
    out = {}
    for m in smap.modules:
        out[m.name] = FP
        for cfg in recipe.stages:
            c = cfg.override_for(m.name)
            if c is None:
                continue
            if not isinstance(c, QuantStageConfig):
                raise LabError(f"stage {cfg.method!r} is not integer weight quantization: the sensitivity map "
                               "predicts RTN formats only")
            g = c.group_for(m.in_features)
            out[m.name] = Format(c.bits, -1 if g == m.in_features else g).name
            break
    return out
