"""The Fit panel's parts as plain functions: the budget text its inputs make, what a known map renders at a
budget (the recipe, a summary naming the nearest uniform recipe, the curve) and the message for a budget
that cannot be met; the heatmap's rows and columns."""

from __future__ import annotations

import pytest

from tests.fit.helpers import tiny_map
from ui.fit import KINDS, _gib_range, _render, budget_text
from ui.fit_plots import sensitivity_heatmap


@pytest.mark.parametrize("kind,expected", [(KINDS[0], "3.5bits"), (KINDS[1], "0.25GiB"), (KINDS[2], "hardware:t4")])
def test_budget_text(kind, expected):
    assert budget_text(kind, 3.5, 0.25, "t4") == expected


def test_a_known_map_renders_a_recipe_and_its_curve():
    _, smap = tiny_map()
    text, say, fig, result = _render(smap, "3.5bits", 2048, 1)
    assert text.startswith("# fitted by") and "method: rtn" in text
    assert "predicted KL" in say and "Uniform" in say
    names = {t.name for t in fig.data}
    assert {"best at each size (predicted)", "fitted recipe", "uniform RTN"} <= names
    assert result.allocation.bytes <= result.budget_bytes
    r = _gib_range(smap)
    assert r["minimum"] < r["value"] < r["maximum"]


def test_a_budget_below_the_smallest_model_is_explained_not_raised():
    _, smap = tiny_map()
    text, say, fig, result = _render(smap, "0.000001GiB", 2048, 1)
    assert text == "" and fig is None and result is None
    assert say.startswith("**Cannot fit:**") and "below the smallest" in say


def test_the_heatmap_has_a_row_per_layer_and_the_head():
    _, smap = tiny_map()
    fig = sensitivity_heatmap(smap)
    assert list(fig.data[0].y) == ["layer 0", "layer 1", "lm_head"]
    assert "fp" not in list(fig.data[0].x) and "w4g64" in list(fig.data[0].x)
