"""Sweeps' `budget:` entries resolved by the fit: the budget spellings, a tiny model's fitted recipe through
compressor.runs.sweep's hook, and a budget the model already fits refused with the reason."""

from __future__ import annotations

import pytest

from compressor.engine.recipe import Recipe
from compressor.errors import LabError
from compressor.fit import sweeps

TEXT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


@pytest.mark.parametrize("budget,expected", [("300MiB", "300MiB"), (3.5, "3.5bits"), ("hardware", "hardware:t4"),
                                             (" hardware:a100 ", "hardware:a100")])
def test_budget_text(budget, expected):
    assert sweeps.budget_text(budget, "t4") == expected


@pytest.mark.parametrize("budget", [None, True, ["3bits"]])
def test_bad_budgets_are_refused(budget):
    with pytest.raises(LabError, match="not understood"):
        sweeps.budget_text(budget, "t4")


def test_a_sweep_budget_entry_becomes_the_fitted_recipe(tiny_folder, monkeypatch):
    from compressor.runs import sweep

    monkeypatch.setattr("compressor.engine.calibration.builtin_text", lambda *a, **k: TEXT)
    sweeps.register()
    try:
        recipe = sweep.RecipeEntry("fit 3.5", budget="3.5bits").for_model(str(tiny_folder), "t4")
        Recipe.from_dict(recipe)
        assert recipe["stages"][0]["method"] == "rtn"
        with pytest.raises(LabError, match="fits 1GiB as it is"):
            sweep.RecipeEntry("fit 1GiB", budget="1GiB").for_model(str(tiny_folder), "t4")
    finally:
        sweep.register_budget_resolver(None)
