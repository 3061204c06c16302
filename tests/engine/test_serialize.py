"""Compressed models save to safetensors + config.json and load back with identical logits."""

import json

import pytest
import torch

from compressor import compress, is_compressed_folder, load_compressed, save_compressed
from compressor.models.loading import DEMO_DIR, load_model
from tests.helpers import random_tokens, tiny_llama


@pytest.mark.parametrize("recipe", [
    "w4-g128",
    "int8",
    {"method": "gptq", "bits": 3, "group_size": 64, "actorder": "group"},  # packed 3-bit with a permutation
    {"method": "rtn", "bits": 2, "group_size": 32, "overrides": [{"pattern": "down_proj", "skip": True}]},
])
def test_round_trip_gives_identical_logits(recipe, tmp_path):
    tokens = random_tokens(4, 32)
    model, report = compress(tiny_llama(), recipe, calibration=tokens)
    expected = model(tokens).logits
    save_compressed(model, None, tmp_path, report)
    assert is_compressed_folder(tmp_path) and (tmp_path / "model.safetensors").is_file()
    section = json.loads((tmp_path / "config.json").read_text())["compression_lab"]
    assert {m["type"] for m in section["modules"].values()} == {"QuantLinear"}
    assert not list(tmp_path.glob("*.bin"))  # safetensors only
    loaded = load_compressed(tmp_path)
    assert torch.equal(loaded(tokens).logits, expected)


def test_loader_opens_compressed_folders(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("LAB_ALLOWED_MODEL_DIRS", str(tmp_path))
    tokens = random_tokens(2, 16)
    model, _ = compress(tiny_llama(), "w4-g128")
    expected = model(tokens).logits
    save_compressed(model, AutoTokenizer.from_pretrained(DEMO_DIR), tmp_path / "m")
    loaded, _ = load_model(str(tmp_path / "m"))
    assert torch.equal(loaded(tokens).logits, expected)
    assert not is_compressed_folder(DEMO_DIR)


@pytest.mark.parametrize("recipe", ["w4-g128", "int8"])
def test_a_missing_packed_tensor_is_an_error_not_uninitialised_memory(recipe, tmp_path):
    from safetensors.torch import load_file, save_file

    from compressor.errors import ModelLoadError

    model, report = compress(tiny_llama(), recipe)
    save_compressed(model, None, tmp_path, report)
    state = load_file(str(tmp_path / "model.safetensors"))
    victim = next(k for k in state if k.startswith("model.layers.1.mlp.down_proj."))
    del state[victim]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing from model.safetensors") as info:
        load_compressed(tmp_path)
    assert victim in str(info.value)


def test_the_saved_generation_config_is_read_back(tmp_path):
    model, report = compress(tiny_llama(), "int8")
    model.generation_config.max_new_tokens = 77
    model.generation_config.repetition_penalty = 1.3
    save_compressed(model, None, tmp_path, report)
    loaded = load_compressed(tmp_path)
    assert loaded.generation_config.max_new_tokens == 77 and loaded.generation_config.repetition_penalty == 1.3


def test_a_model_with_unsaveable_modules_is_named_before_saving():
    from compressor.engine.serialize import unsaveable_modules

    model = tiny_llama()
    assert unsaveable_modules(model) == []
    compress(model, {"method": "bnb-nf4"})
    blocked = unsaveable_modules(model)
    assert blocked and all(n.startswith("model.layers.") for n in blocked)
