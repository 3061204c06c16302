"""Recipe text on the page: presets, the YAML editor's text, appending a stage from the builder.

The engine parses and checks recipes (`load_recipe` raises a RecipeError naming the field, the value
and the fix); this module only turns the editor's text into what `load_recipe` takes.
"""

from __future__ import annotations

import yaml

from compressor.engine import bounds
from compressor.engine.presets import list_presets
from compressor.engine.recipe import Recipe, load_recipe
from compressor.errors import LabError

DEFAULT_PRESET = "w4-g128"  # RTN: calibration-free, the one-click demo


def preset_choices() -> list[tuple[str, str]]:
    """(label with description, name) of the named recipes."""
    return [(f"{name}: {desc}" if desc else name, name) for name, desc in list_presets().items()]


def recipe_yaml(source: object) -> str:
    """YAML text of a preset name or a parsed recipe, in the engine's own format."""
    return load_recipe(source).to_yaml()


def parse_recipe_text(text: str) -> object:
    """YAML/JSON text -> the parsed recipe (dict or list), or a preset name, read by the engine's bounded
    parser (compressor.engine.bounds: size, aliases, nodes, nesting). LabError for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise LabError("the recipe is empty: pick a preset, add a stage, or paste a YAML recipe")
    presets = list_presets()
    if text.strip() in presets:
        return text.strip()
    parsed = bounds.parse_recipe_text(text)
    if not isinstance(parsed, dict | list):
        raise LabError(f"the recipe must be a preset name ({', '.join(presets)}) or a YAML mapping of stages, "
                       f"got {type(parsed).__name__} {str(parsed)[:40]!r}")
    return parsed


def recipe_from_text(text: str) -> Recipe:
    """The editor's text as the engine's Recipe: the text itself goes to `load_recipe` (never a file name
    on the server), which bounds it before anything is expanded; LabError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise LabError("the recipe is empty: pick a preset, add a stage, or paste a YAML recipe")
    return load_recipe(text, files=False)


def stages_of(parsed: object) -> list:
    if isinstance(parsed, list):
        return list(parsed)
    return list(parsed.get("stages") or [])


def with_stage(text: str, stage: dict) -> str:
    """The recipe text with one stage appended (an empty editor starts a new recipe)."""
    parsed = parse_recipe_text(text) if text and text.strip() else {"stages": []}
    if isinstance(parsed, str):  # a preset name: append to its stages
        parsed = yaml.safe_load(recipe_yaml(parsed))
    if isinstance(parsed, list) or "stages" not in parsed:
        parsed = {"stages": parsed if isinstance(parsed, list) else [parsed]}
    parsed = dict(parsed)
    parsed["stages"] = stages_of(parsed) + [stage]
    return yaml.safe_dump(parsed, sort_keys=False)


def recipe_label(recipe: Recipe) -> str:
    """A recipe named by its stages (each stage config names itself)."""
    return recipe.label()


def stored_recipe_label(stored: object) -> str:
    """The label of a recipe as a run stored it (any form `load_recipe` reads); its text if it no longer
    loads (a method removed since), so the history still names it."""
    if stored is None:
        return ""
    try:
        return recipe_label(load_recipe(stored))
    except LabError:
        return str(stored)[:80]
