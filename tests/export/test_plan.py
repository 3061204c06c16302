"""What an export can refuse before any work (compressor/export/plan.py): the folder, the recipe, the config."""

from __future__ import annotations

import pytest

from compressor.errors import LabError, RecipeError
from compressor.export import ExportRefused
from compressor.export.plan import check_export

W3 = {"stages": [{"method": "rtn", "bits": 3, "group_size": 32}]}
W4_W2_DOWN = {"stages": [{"method": "hqq", "bits": 4, "group_size": 64,
                          "overrides": [{"pattern": "down_proj", "bits": 2}]}]}
KIVI = {"stages": [{"method": "rtn", "bits": 8}, {"method": "kivi"}]}


@pytest.mark.parametrize("fmt,recipe,kw,needle", [
    ("gguf", W3, {}, "GGUF cannot hold 3-bit weights (stage 0, rtn)"),
    ("gguf", W4_W2_DOWN, {}, "GGUF cannot hold 2-bit weights (stage 0, hqq)"),
    ("gguf", KIVI, {}, "GGUF cannot hold the KV-cache stage (kivi)"),
    ("transformers", KIVI, {}, "transformers cannot hold the KV-cache stage (kivi)"),
])
def test_recipes_a_format_refuses_name_what_can(fmt, recipe, kw, needle, tmp_path):
    with pytest.raises(ExportRefused) as e:
        check_export(fmt, tmp_path / "out", recipe, **kw)
    assert needle in str(e.value)
    assert ("compressed-tensors" in str(e.value)) == ("bit" in needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt,recipe,kw", [
    ("gguf", W3, {"mismatch": "dense"}),  # written as floats instead
    ("ct", W3, {}),
    ("gguf", KIVI, {"drop_kv_cache": True}),
    ("hf", "w4-g128", {}),
])
def test_what_the_format_holds_passes(fmt, recipe, kw, tmp_path):
    assert check_export(fmt, tmp_path / "new" / "out", recipe, **kw) in ("gguf", "compressed-tensors", "transformers")
    assert not (tmp_path / "new").exists()  # nothing created


def test_gguf_refuses_an_architecture_it_does_not_write(tmp_path):
    from transformers import GPT2Config, LlamaConfig

    with pytest.raises(ExportRefused, match="a 'gpt2' model .* export to compressed-tensors or transformers"):
        check_export("gguf", tmp_path / "o", config=GPT2Config())
    with pytest.raises(ExportRefused, match="attention or MLP biases"):
        check_export("gguf", tmp_path / "o", config=LlamaConfig(attention_bias=True))
    check_export("gguf", tmp_path / "o", config=LlamaConfig())
    check_export("compressed-tensors", tmp_path / "o", config=GPT2Config())


@pytest.mark.parametrize("fmt,out,kw,error,needle", [
    ("onnx", "o", {}, RecipeError, "choose one of compressed-tensors, gguf, transformers"),
    ("gguf", "o", {"mismatch": "guess"}, RecipeError, "mismatch='guess'"),
    ("gguf", "full", {}, LabError, "is not empty"),
    ("gguf", "file", {}, LabError, "is a file: give a folder"),
    ("gguf", "file/o", {}, LabError, "is a file, not a folder"),
])
def test_bad_format_option_or_folder(fmt, out, kw, error, needle, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_export(fmt, tmp_path / out, **kw)
