"""What a format cannot hold is refused before anything is written, naming the format (or option) that can."""

from __future__ import annotations

import pytest

from compressor.errors import LabError, RecipeError
from compressor.export import ExportRefused, export_model, preview_export


def _refused(model, tokenizer, fmt, out, **kw) -> str:
    with pytest.raises(ExportRefused) as e:
        export_model(model, tokenizer, fmt, out, **kw)
    assert isinstance(e.value, LabError)
    assert not out.exists()  # refused before writing
    return str(e.value)


def test_three_bit_in_gguf_names_compressed_tensors(compressed_tiny, demo_tokenizer, tmp_path):
    msg = _refused(compressed_tiny("int3-g32"), demo_tokenizer, "gguf", tmp_path / "out")
    assert "3-bit" in msg and "compressed-tensors" in msg and "mismatch='dense'" in msg
    dense = preview_export(compressed_tiny("int3-g32"), "gguf", demo_tokenizer, mismatch="dense")
    assert {n.status for n in dense.notes} == {"dense"} and dense.lossless


@pytest.mark.parametrize("fmt", ["gguf", "compressed-tensors", "transformers"])
def test_kv_cache_stage_is_refused_unless_dropped(fmt, compressed_tiny, demo_tokenizer, tmp_path):
    model = compressed_tiny("kivi")
    msg = _refused(model, demo_tokenizer, fmt, tmp_path / "out")
    assert "KV-cache stage (kivi)" in msg and "save_compressed" in msg and "drop_kv_cache=True" in msg
    result = preview_export(model, fmt, demo_tokenizer, drop_kv_cache=True)
    assert any("kivi" in m and "dropped" in m for m in result.model_notes)


@pytest.mark.parametrize("fmt", ["compressed-tensors", "transformers"])
def test_heads_that_do_not_divide_hidden_are_refused_for_transformers_configs(fmt, compressed_tiny, demo_tokenizer,
                                                                              tmp_path):
    msg = _refused(compressed_tiny("structured-quarter"), demo_tokenizer, fmt, tmp_path / "out")
    assert "3 attention heads with hidden size 128" in msg and "GGUF" in msg


def test_gguf_writes_them_for_llama_cpp_and_skips_the_transformers_check(compressed_tiny, demo_tokenizer, tmp_path):
    result = export_model(compressed_tiny("structured-quarter"), demo_tokenizer, "gguf", tmp_path, verify=True)
    assert result.logits_max_abs_err is None
    assert any("llama.cpp reads this file" in m for m in result.model_notes)
    assert any("verify skipped" in m for m in result.model_notes)


def test_mismatch_refuse_and_dense(compressed_tiny, demo_tokenizer, tmp_path):
    model = compressed_tiny("hqq-g32")
    msg = _refused(model, demo_tokenizer, "compressed-tensors", tmp_path / "out", mismatch="refuse")
    assert "fractional zeros" in msg and "GGUF" in msg
    dense = preview_export(model, "compressed-tensors", mismatch="dense")
    assert {n.status for n in dense.notes} == {"dense"} and dense.lossless


def test_gguf_needs_a_tokenizer_it_can_describe(compressed_tiny, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = compressed_tiny("int4-g32-sym")
    assert "tokenizer" in _refused(model, None, "gguf", tmp_path / "a")
    backend = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    msg = _refused(model, PreTrainedTokenizerFast(tokenizer_object=backend), "gguf", tmp_path / "b")
    assert "Whitespace" in msg and "compressed-tensors or transformers" in msg


@pytest.mark.parametrize("kw", [{"fmt": "onnx"}, {"fmt": "gguf", "mismatch": "guess"}, {"fmt": "gguf", "dtype": "int8"}])
def test_bad_options_are_recipe_errors(kw, compressed_tiny, demo_tokenizer, tmp_path):
    fmt = kw.pop("fmt")
    with pytest.raises(RecipeError):
        export_model(compressed_tiny("int4-g32-sym"), demo_tokenizer, fmt, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
