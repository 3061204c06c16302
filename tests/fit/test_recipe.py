"""Allocations as recipes: an ordinary recipe that parses, gives every module its format when compressed
(and stores the bytes the allocation predicted), and splits into stages when overrides would overflow one."""

from __future__ import annotations

import copy

import pytest

from compressor.engine.bounds import MAX_LIST_ITEMS
from compressor.engine.compress import compress
from compressor.engine.recipe import Recipe, load_recipe
from compressor.engine.report import state_dict_bytes
from compressor.errors import LabError
from compressor.fit.allocator import allocate, predict
from compressor.fit.recipe import formats_from_recipe, recipe_from_formats
from tests.fit.helpers import tiny_map
from tests.fit.test_allocator import synthetic_map


@pytest.mark.parametrize("bits", [3.0, 4.5, 6.0])
def test_the_recipe_gives_each_module_its_format_and_the_predicted_bytes(bits):
    model, smap = tiny_map()
    params = sum(m.params for m in smap.modules)
    a = allocate(smap, smap.fixed_float_params * 4 + int(bits / 8 * params), 4, curve=False)
    recipe = load_recipe(recipe_from_formats(smap, a.formats))
    assert formats_from_recipe(smap, recipe) == a.formats
    compressed, _ = compress(copy.deepcopy(model), recipe)
    assert state_dict_bytes(compressed) == a.bytes


def test_float_modules_are_skipped_and_a_quantized_head_is_no_longer_ignored():
    _, smap = tiny_map()
    formats = {m.name: "w4g32" for m in smap.modules}
    formats["model.layers.0.mlp.up_proj"] = "fp"
    stage = recipe_from_formats(smap, formats)["stages"][0]
    assert {"pattern": r"^model\.layers\.0\.mlp\.up_proj$", "skip": True} in stage["overrides"]
    assert all("lm_head" not in p for p in stage["ignore"])
    del formats["lm_head"]  # float: the default ignore keeps it so, without an override
    stage = recipe_from_formats(smap, formats)["stages"][0]
    assert "ignore" not in stage and all("lm_head" not in o["pattern"] for o in stage["overrides"])


def test_overrides_past_one_stage_split_by_role_into_stages_that_target_each_module_once():
    roles = tuple(f"mlp.p{i}" for i in range(12))
    smap = synthetic_map(4, roles=roles)
    fmts = ["w2g32", "w3g32", "w4g32", "w8pc"]
    formats = {m.name: fmts[m.layer] for m in smap.modules}  # 12 roles x 3 formats off the base: 36 overrides
    recipe = Recipe.from_dict(recipe_from_formats(smap, formats))
    assert len(recipe.stages) > 1 and all(len(s.overrides) <= MAX_LIST_ITEMS for s in recipe.stages)
    assert formats_from_recipe(smap, recipe) == formats
    for m in smap.modules:
        assert sum(s.override_for(m.name) is not None for s in recipe.stages) == 1


def test_an_all_float_allocation_has_no_recipe_and_a_foreign_method_is_refused():
    _, smap = tiny_map()
    with pytest.raises(LabError, match="fits as it is"):
        recipe_from_formats(smap, {})
    with pytest.raises(LabError, match="predicts RTN formats only"):
        formats_from_recipe(smap, load_recipe("smoothquant-w8a8"))
    assert predict(smap, {}, 4)[0] == 0.0


def test_a_quantized_tied_head_is_refused_not_untied():
    import dataclasses

    _, smap = tiny_map(tied=True)
    # as if an embedding method were registered and the allocator had allowed the head a format
    smap = dataclasses.replace(smap, modules=[dataclasses.replace(m, allowed=list(m.costs)) for m in smap.modules])
    with pytest.raises(LabError, match="shares its weight with the input embedding"):
        recipe_from_formats(smap, {m.name: "w8pc" for m in smap.modules})
