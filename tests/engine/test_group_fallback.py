"""Group sizes that do not divide a layer's in_features: the layer takes the largest power of two below
the asked size that does (or one scale per channel), the report names those layers, and the packed
weights are exactly what asking for that group size on those layers gives."""

from __future__ import annotations

import pytest
import torch

from compressor import RecipeError, compress
from compressor.engine.stage import fallback_group
from tests.helpers import random_tokens, tiny_llama

# hidden 192 = 3 x 64: q/k/v/o/gate/up (in_features 192) cannot take group 128, down_proj (384) can
WIDE = r"self_attn\.(q|k|v|o)_proj|mlp\.(gate|up)_proj"


def _model():
    return tiny_llama(hidden=192, intermediate=384, heads=3)


@pytest.mark.parametrize("k, asked, got", [
    (576, 128, 64), (576, 96, 64), (192, 128, 64), (688, 128, 16), (577, 128, 577), (100, 32, 100), (1536, 1024, 512),
])
def test_the_fallback_is_the_largest_power_of_two_below_that_divides(k, asked, got):
    assert fallback_group(k, asked) == got and (got == k or (k % got == 0 and got < asked))


@pytest.mark.parametrize("method, extra", [("rtn", {}), ("gptq", {}), ("awq", {"n_grid": 4}), ("hqq", {"iters": 4})])
def test_each_integer_method_falls_back_per_layer_and_names_the_layers(method, extra):
    model, report = compress(_model(), [{"method": method, "bits": 4, "group_size": 128, **extra}],
                             calibration=random_tokens(4, 32))
    layer = model.model.layers[1]
    assert layer.self_attn.q_proj.group_size == 64 and layer.mlp.up_proj.group_size == 64
    assert layer.mlp.down_proj.group_size == 128
    rows = {r.name: r.group_size for r in report.layers}
    assert rows["model.layers.0.self_attn.k_proj"] == 64 and rows["model.layers.0.mlp.down_proj"] == 128
    warnings = [w for w in report.warnings if "does not divide" in w]
    assert warnings == [f"stage 0 ({method}): group_size=128 does not divide in_features 192 of 12 layer(s) "
                        "(model.layers.[0-1].{self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, "
                        "self_attn.o_proj, mlp.gate_proj, mlp.up_proj}): they use group_size=64 (group_fallback; "
                        "set it to false to refuse instead)"]


def test_the_fallback_gives_the_weights_an_explicit_override_gives():
    fell, _ = compress(_model(), [{"method": "rtn", "bits": 4, "group_size": 128}])
    asked, report = compress(_model(), [{"method": "rtn", "bits": 4, "group_size": 128,
                                         "overrides": [{"pattern": WIDE, "group_size": 64}]}])
    assert not any("does not divide" in w for w in report.warnings)
    assert all(torch.equal(a, b) for a, b in zip(fell.state_dict().values(), asked.state_dict().values(), strict=True))


def test_without_the_fallback_the_recipe_is_refused_naming_the_layer_and_both_fixes():
    with pytest.raises(RecipeError, match=r"in_features 192 of model\.layers\.0\.self_attn\.q_proj: try 64, 32, 16"
                                          r".*or set group_fallback: true"):
        compress(_model(), [{"method": "rtn", "group_size": 128, "group_fallback": False}])


def test_a_shape_an_earlier_stage_changed_falls_back_too():
    # structured pruning leaves down_proj with 192 of 256 inputs: group 128 no longer divides it
    model, report = compress(tiny_llama(), [{"method": "structured", "heads_fraction": 0.0, "mlp_fraction": 0.25},
                                            {"method": "rtn", "group_size": 128}], calibration=random_tokens(4, 32))
    assert model.model.layers[0].mlp.down_proj.group_size == 64
    assert any(w.startswith("stage 1 (rtn): group_size=128 does not divide in_features 192 of 2 layer(s) "
                            "(model.layers.[0-1].mlp.down_proj)") for w in report.warnings)
