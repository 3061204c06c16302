"""Recipe.traits(): the formats a recipe leaves that change how kernels behave, and the lowest weight
bit width, declared by each config (StageConfig.traits) instead of a switch on method names.

The preset table is what the name switch it replaces (recipe_traits in compressor/runs) gave."""

from __future__ import annotations

import pytest

from compressor.engine.presets import list_presets
from compressor.engine.recipe import get_preset, load_recipe

INT4 = ["int4-weight-only", "weight-only-int"]
PRESET_TRAITS = {
    "int8": (["weight-only-int"], 8.0), "w4-g128": (INT4, 4.0), "w3-g128": (INT4, 3.0),
    "gptq-w4-g128": (INT4, 4.0), "gptq-w3-g128": (INT4, 3.0), "awq-w4-g128": (INT4, 4.0),
    "hqq-w4-g64": (INT4, 4.0), "smoothquant-w8a8": (["int8-dynamic"], 8.0), "nf4": (["nf4"], 4.0),
    "llm-int8": (["int8-dynamic"], 8.0), "fp8": (["fp8"], 8.0), "sparsegpt-50": ([], 32.0),
    "sparsegpt-50-distill-int8": (["weight-only-int"], 8.0), "structured-25": ([], 32.0),
}


def test_every_preset_is_in_the_table():
    assert set(PRESET_TRAITS) == set(list_presets())


@pytest.mark.parametrize("name", sorted(PRESET_TRAITS))
def test_preset_traits(name):
    assert get_preset(name).traits() == PRESET_TRAITS[name]


@pytest.mark.parametrize("stages, expected", [
    ([{"method": "wanda", "pattern": "2:4"}, {"method": "rtn", "bits": 8, "group_size": -1}],
     (["sparse-2:4", "weight-only-int"], 8.0)),
    ([{"method": "bnb-fp4"}, {"method": "kivi", "bits": 2}], (["nf4"], 4.0)),  # a KV stage's bits are the cache's
    ([{"method": "streaming"}], ([], 32.0)),
    # per-module overrides count: 4-bit down_proj under an 8-bit stage uses the int4 path
    ([{"method": "rtn", "bits": 8, "overrides": [{"pattern": "down_proj", "bits": 4},
                                                 {"pattern": "up_proj", "bits": 2, "skip": True}]}], (INT4, 4.0)),
    # an override's `pattern` is its module regex, never the N:M pattern
    ([{"method": "magnitude", "overrides": [{"pattern": "2:4|mlp", "sparsity": 0.25}]}], ([], 32.0)),
])
def test_stacks_and_overrides(stages, expected):
    assert load_recipe(stages).traits() == expected
