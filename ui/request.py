"""The page's inputs as a `RunRequest`: the one function the run button, and a script calling /run, go
through. The evaluation starts from a named preset (compressor.measure.settings.PRESETS: "quick" by
default, "thorough" for reports) and the four sliders change what they show; what the page does not
show (stride, repeats, speed lengths) is the preset's, so the page and the CLI ask for the same run.
"""

from __future__ import annotations

from compressor.errors import LabError
from compressor.measure.hardware import get_profile
from compressor.measure.settings import DEFAULT_PRESET, PRESETS
from compressor.models.preflight import preflight
from compressor.runs.contract import PROJECTION_CONTEXT, THIS_MACHINE, EvalSettings, RunRequest
from compressor.runs.limits import PROJECTION_BATCHES, PROJECTION_CONTEXTS, check_model_spec
from ui.recipes import recipe_from_text

# Evaluation settings shown on the page: name -> (label, UI min, UI max). Defaults come from
# EvalSettings; the UI maxima are tighter than the engine's, for a shared machine.
EVAL_FIELDS = {
    "ppl_tokens": ("Text tokens scored (perplexity, KL)", 128, 16384),
    "context": ("Context length (tokens)", 16, 2048),
    "arithmetic_samples": ("Arithmetic problems", 0, 400),
    "max_new_tokens": ("New tokens per sample answer", 1, 128),
}


EVAL_PRESETS = [("Quick: a first result in seconds", "quick"), ("Standard", "standard"),
                ("Thorough: for reports (minutes)", "thorough")]


def eval_default(name: str, preset: str = DEFAULT_PRESET) -> int:
    """A preset's value of a setting the page shows, within the page's bounds."""
    _, lo, hi = EVAL_FIELDS[name]
    return int(min(max(getattr(EvalSettings.named(preset), name), lo), hi))


def _whole(label: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise LabError(f"{label} = {str(value)[:40]!r} is out of range: use {lo} to {hi}")
    if value != int(value):
        raise LabError(f"{label} = {value!r} is not a whole number")
    return int(value)


def build_request(model: str | None, recipe_text: str, hardware: str | None, *eval_values: float,
                  projection_context: object = PROJECTION_CONTEXT, projection_batch: object = 1,
                  evaluation: str | None = DEFAULT_PRESET) -> RunRequest:
    """A RunRequest from the settings panel's values: the model box, the recipe editor's text, the
    hardware profile, the evaluation sliders in EVAL_FIELDS order, where to project, and the evaluation
    preset the sliders change. Bad input raises LabError naming the field and the fix (the recipe's
    problems are the engine's RecipeError), before any work."""
    if model is not None and not isinstance(model, str):
        raise LabError(f"the model must be text (a name of the list, a hub id or a folder), got {type(model).__name__}")
    spec = model.strip() if isinstance(model, str) else ""
    if not spec:
        raise LabError("no model given: pick 'demo' or type a hub id or a local folder")
    check_model_spec(spec)
    hardware = hardware.strip() if isinstance(hardware, str) and hardware.strip() else THIS_MACHINE
    if hardware != THIS_MACHINE:
        get_profile(hardware)  # an unknown id: LabError listing the known ones
    if recipe_text is not None and not isinstance(recipe_text, str):
        raise LabError(f"the recipe must be text (YAML, JSON or a preset name), got {type(recipe_text).__name__}")
    recipe = recipe_from_text(recipe_text)
    if len(eval_values) != len(EVAL_FIELDS):
        raise LabError(f"expected {len(EVAL_FIELDS)} evaluation settings ({', '.join(EVAL_FIELDS)}), "
                       f"got {len(eval_values)}")
    settings = {name: _whole(label, value, lo, hi)
                for (name, (label, lo, hi)), value in zip(EVAL_FIELDS.items(), eval_values, strict=True)}
    if evaluation not in PRESETS:
        raise LabError(f"evaluation={str(evaluation)[:40]!r} is not a preset: use one of {', '.join(PRESETS)}")
    return RunRequest(model=spec, recipe=recipe, hardware=hardware,
                      eval=EvalSettings.from_dict({"preset": evaluation, **settings}),
                      projection_context=_whole("Projection context", projection_context, *PROJECTION_CONTEXTS),
                      projection_batch=_whole("Projection batch", projection_batch, *PROJECTION_BATCHES))


def preflight_warnings(request: RunRequest) -> list[str]:
    """The request's recipe checked against its model's shapes from the config alone, before it is queued
    (compressor.models.preflight: milliseconds, no weights): LabError for a problem, else what the run will
    do other than asked. A hub id (org/name) is left to the run: reading its config needs the network."""
    spec = request.model
    if "/" in spec and not spec.startswith(("/", ".", "~")):
        return []
    return preflight(spec, request.recipe, allow_pickle=request.allow_pickle,
                     trust_remote_code=request.trust_remote_code).warnings
