"""Honest speed: the compressed model's decode speed against the baseline's with the spread of the
repeats, and the facts that say why it is slower here (kernel paths, what the recipe stores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.runs.contract import Report, Stat
from compressor.runs.speedfacts import speed_comparison

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_v1_this_machine.json"


def _report(base: tuple, comp: tuple, paths: dict, recipe=None) -> Report:
    r = Report.from_dict(json.loads(FIXTURE.read_text()))
    for side, (median, lo, hi, n) in (("baseline", base), ("compressed", comp)):
        getattr(r, side).speed.by_batch["1"].decode_tokens_per_s = Stat(median, lo, hi, n)
    r.compressed.speed.kernel_paths = paths
    if recipe is not None:
        from compressor.engine.recipe import load_recipe

        r.request.recipe = load_recipe(recipe)
    return r


def test_slower_beyond_the_spread_says_why_with_the_kernel_paths():
    c = speed_comparison(_report((20, 19, 21, 3), (5, 4.8, 5.3, 3), {"reference": 30, "cpu-int4pack": 12}))
    assert c.slower and c.separated and c.ratio == pytest.approx(0.25)
    assert c.reference_modules == 30 and c.reference_share == pytest.approx(30 / 42)
    text = c.sentence()
    assert "x0.25" in text and "median of 3 repeats" in text and "do not overlap" in text
    assert "slower here because 30 of 42 compressed layers ran 'reference' (dequantize the weights" in text
    assert "12 of 42 compressed layers ran 'cpu-int4pack'" in text


def test_overlapping_ranges_are_within_the_noise_and_give_no_reason():
    c = speed_comparison(_report((20, 10, 25, 3), (15, 9, 22, 3), {"cpu-int4pack": 42}))
    assert not c.slower and not c.separated
    assert "within the noise" in c.sentence() and "because" not in c.sentence()


def test_one_repeat_says_no_spread_is_known():
    c = speed_comparison(_report((20, 20, 20, 1), (8, 8, 8, 1), {"cpu-int8pack": 42}))
    assert c.slower and not c.separated and "timed once per side" in c.sentence()


@pytest.mark.parametrize("recipe, needle", [
    ([{"method": "magnitude", "sparsity": 0.5, "pattern": "2:4"}], "2:4 sparsity stored dense"),
    ([{"method": "svd", "energy": 0.5}], "two matmuls per layer"),
    ([{"method": "kivi", "bits": 2}], "quantized and dequantized at every decode step"),
])
def test_what_the_recipe_stores_is_a_reason_too(recipe, needle):
    r = _report((20, 19, 21, 3), (5, 4.8, 5.3, 3), {}, recipe)
    assert needle in speed_comparison(r).sentence()


def test_no_comparison_until_both_sides_are_timed():
    r = _report((20, 19, 21, 3), (5, 4.8, 5.3, 3), {})
    r.compressed.speed = None
    assert speed_comparison(r) is None
