"""Budgets in sweeps: a `budget:` entry of a sweep's recipe list becomes the fitted recipe of each model.

    - budget: 300MiB          # all weights
    - budget: 3.5bits         # average bits of the modules the fit may quantize
    - budget: hardware        # what fits the sweep's hardware profile (context 2048, batch 1)
    - budget: hardware:t4     # a named profile

compressor.runs.sweep asks the resolver registered with `register_budget_resolver`; `register()` registers
`budget_recipe` (the sweep's entry points call it once; it is not done at import, so that importing
compressor.fit changes nothing elsewhere). The first budget of a model measures its sensitivity map
(minutes on 2 cores for SmolLM2); the others read it from the cache.
"""

from __future__ import annotations

from compressor.errors import LabError


def budget_text(budget: object, hardware: str) -> str:
    """The entry's budget as `fit` takes it: "hardware" alone names the sweep's profile."""
    if isinstance(budget, bool) or not isinstance(budget, str | int | float):
        raise LabError(f"budget {budget!r} is not understood: write 300MiB, 3.5bits, hardware or hardware:<profile>")
    text = str(budget).strip()
    if isinstance(budget, int | float):  # a bare number from YAML: bits are what people write bare
        text = f"{text}bits"
    return f"hardware:{hardware}" if text.lower() == "hardware" else text


def budget_recipe(model: str, budget: object, hardware: str) -> dict:
    """The fitted recipe ({"stages": [...]}) of `model` within `budget`; LabError when the model already fits
    (no recipe to run) or the budget cannot be met."""
    from compressor.fit.fitting import fit

    text = budget_text(budget, hardware)
    result, _ = fit(model, text)
    if result.recipe is None:
        raise LabError(f"{model} fits {text} as it is (every module float): a sweep cell would run no recipe; "
                       "give a smaller budget")
    return result.recipe


def register() -> None:
    """Lets sweeps resolve `budget:` entries with the fit."""
    from compressor.runs.sweep import register_budget_resolver

    register_budget_resolver(budget_recipe)
