"""The page's inputs as a `RunRequest`: the one function the run button, and a script calling /run, go
through. Defaults the page does not show (stride, repeats, the projection's context) are the
contract's, so the page and the CLI ask for the same run with the same settings.
"""

from __future__ import annotations

from compressor.errors import LabError
from compressor.runs.contract import THIS_MACHINE, EvalSettings, RunRequest
from ui.recipes import recipe_from_text

# Evaluation settings shown on the page: name -> (label, UI min, UI max). Defaults come from
# EvalSettings; the UI maxima are tighter than the engine's, for a shared machine.
EVAL_FIELDS = {
    "ppl_tokens": ("Text tokens scored (perplexity, KL)", 128, 16384),
    "context": ("Context length (tokens)", 16, 2048),
    "arithmetic_samples": ("Arithmetic problems", 0, 400),
    "max_new_tokens": ("New tokens per sample answer", 1, 128),
}


def eval_default(name: str) -> int:
    """The engine's default for a setting the page shows, within the page's bounds."""
    _, lo, hi = EVAL_FIELDS[name]
    return int(min(max(getattr(EvalSettings(), name), lo), hi))


def build_request(model: str | None, recipe_text: str, hardware: str | None, *eval_values: float) -> RunRequest:
    """A RunRequest from the settings panel's values: the model box, the recipe editor's text, the
    hardware profile and the evaluation sliders in EVAL_FIELDS order. Bad input raises LabError naming
    the field and the fix (the recipe's problems are the engine's RecipeError), before any work."""
    spec = (model or "").strip()
    if not spec:
        raise LabError("no model given: pick 'demo' or type a hub id or a local folder")
    recipe = recipe_from_text(recipe_text)
    if len(eval_values) != len(EVAL_FIELDS):
        raise LabError(f"expected {len(EVAL_FIELDS)} evaluation settings ({', '.join(EVAL_FIELDS)}), "
                       f"got {len(eval_values)}")
    settings = {}
    for (name, (label, lo, hi)), value in zip(EVAL_FIELDS.items(), eval_values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise LabError(f"{label} = {value!r} is out of range: use {lo} to {hi}")
        if value != int(value):
            raise LabError(f"{label} = {value!r} is not a whole number")
        settings[name] = int(value)
    return RunRequest(model=spec, recipe=recipe, hardware=hardware or THIS_MACHINE,
                      eval=EvalSettings.from_dict(settings))
