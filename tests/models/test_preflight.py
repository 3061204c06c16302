"""Checks before work: absurd configs refused before any module is built, a recipe that cannot fit a
model's shapes refused from its config alone, and what the run will do differently said up front."""

from __future__ import annotations

import json

import pytest

from compressor.errors import ModelLoadError, RecipeError
from compressor.models.preflight import preflight
from tests.helpers import tiny_llama


@pytest.fixture
def config_only(tmp_path):
    """A folder with a config.json and an empty weights file: all a preflight reads."""
    def make(**changes):
        folder = tmp_path / "m"
        folder.mkdir(exist_ok=True)
        cfg = tiny_llama(hidden=192, intermediate=384, heads=3).config.to_dict() | changes
        (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
        (folder / "model.safetensors").write_bytes(b"")
        return str(folder)
    return make


@pytest.mark.parametrize("changes, match", [
    ({"num_hidden_layers": 10**7}, r"num_hidden_layers=10000000, outside what real models have"),
    ({"hidden_size": 0}, r"hidden_size=0"),
    ({"vocab_size": "many"}, r"vocab_size='many'"),
    ({"num_key_value_heads": 2}, r"num_attention_heads=3 and num_key_value_heads=2"),
    ({"hidden_size": None}, r"has no hidden_size"),
    ({"hidden_size": 131072, "num_attention_heads": 1024, "num_key_value_heads": 1024, "num_hidden_layers": 1000,
      "intermediate_size": 1_000_000}, r"about \d+T parameters"),
])
def test_an_absurd_config_is_refused_before_any_module_is_built(config_only, tmp_path, monkeypatch, changes, match):
    built = []
    monkeypatch.setattr("compressor.models.loading._meta_model", lambda *a: built.append(a))
    with pytest.raises(ModelLoadError, match=match):
        preflight(config_only(**changes), "int8", roots=[tmp_path])
    assert built == []


def test_a_model_too_large_for_memory_is_refused_with_the_numbers(config_only, tmp_path):
    with pytest.raises(ModelLoadError, match="GiB needed"):
        preflight(config_only(), "int8", roots=[tmp_path], available_memory=1000)


def test_a_group_size_that_does_not_fit_names_the_layer_and_the_fix_from_the_config_alone(config_only, tmp_path):
    recipe = {"method": "gptq", "bits": 4, "group_size": 128, "group_fallback": False}
    with pytest.raises(RecipeError, match=r"in_features 192 of model\.layers\.0\.self_attn\.q_proj: try 64, 32, "
                                          r"16.*group_fallback: true"):
        preflight(config_only(), recipe, roots=[tmp_path])


def test_with_the_fallback_the_preflight_says_which_layers_get_which_group(config_only, tmp_path):
    pre = preflight(config_only(), "gptq-w4-g128", roots=[tmp_path])
    assert pre.targets == [14] and pre.shape["layers"] == 2 and pre.shape["hidden"] == 192
    (warning,) = pre.warnings
    assert warning.startswith("stage 0 (gptq): group_size=128 does not divide in_features 192 of 12 layer(s) "
                              "(model.layers.[0-1].{self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, "
                              "self_attn.o_proj, mlp.gate_proj, mlp.up_proj}): they use group_size=64")


@pytest.mark.parametrize("recipe, match", [
    ({"method": "kivi", "group_size": 128}, r"head_dim 64.*try 8, 16, 32, 64"),
    ({"method": "rtn", "targets": "qkv_proj"}, r"matches no linear layer.*model\.layers\.0\.self_attn\.q_proj"),
    ({"stages": [{"method": "rtn"}, {"method": "sparsegpt"}]}, r"already quantized"),
])
def test_other_recipe_problems_are_found_on_the_meta_model(config_only, tmp_path, recipe, match):
    with pytest.raises(RecipeError, match=match):
        preflight(config_only(), recipe, roots=[tmp_path])


def test_the_demo_model_passes_every_preset():
    from compressor.engine.presets import list_presets

    for name in list_presets():
        pre = preflight("demo", name)
        assert pre.warnings == [] and pre.source is None and pre.n_params > 7_000_000


SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
           "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}


def test_every_preset_passes_on_smollm2_shapes_and_says_what_it_does_differently(tmp_path):
    """SmolLM2-135M's config alone (576 = 4.5 x 128): group-128 presets fall back to 64 on 180 of 210
    linears, the distill stack warns of its cost, nothing is refused."""
    from compressor.engine.presets import list_presets

    folder = tmp_path / "smollm2-config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOLLM2))
    (folder / "model.safetensors").write_bytes(b"")
    for name in list_presets():
        pre = preflight(str(folder), name, roots=[tmp_path])
        assert pre.n_params == 134_515_008 and pre.targets[0] == 210
        fell = [w for w in pre.warnings if "does not divide" in w]
        assert len(fell) == ("g128" in name), (name, pre.warnings)
        assert all("of 180 layer(s)" in w and "they use group_size=64" in w for w in fell)
        assert any("TFLOP" in w for w in pre.warnings) == ("distill" in name)
