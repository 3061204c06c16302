"""Round trips of tiny compressed Llamas through each format's own reader (transformers; gguf's GGUFReader).

For every case: the note of each decoder linear says what was written and how exactly; the weights the
reader loads differ from the lab's by exactly the error the note reports (0 where it says lossless); the
reader's logits match the lab's compressed model within the tolerance of the lab's own CPU kernels (which
compute in bf16), and a dense fp32 copy of the lab's weights much more tightly where nothing was rounded.
"""

from __future__ import annotations

import pytest
import torch

from compressor.export import GGUF_FILE, export_model
from compressor.export.verify import load_export, probe_ids
from tests.export.conftest import VOCAB, dense_reference, lab_weights

LOSSLESS, ROUNDED = {"lossless"}, {"rounded", "lossless"}  # a rounded tensor whose mins all fit fp16 is lossless
# (recipe, format, written_as of every decoder linear, allowed statuses)
CASES = [
    ("int4-g32-sym", "gguf", "Q4_0", LOSSLESS),
    ("int4-g32-sym", "compressed-tensors", "pack-quantized int4 group 32 sym", LOSSLESS),
    ("int4-g32-asym", "gguf", "Q4_1", ROUNDED),
    ("int4-g32-asym", "compressed-tensors", "pack-quantized int4 group 32 asym", LOSSLESS),
    ("int8-channel", "gguf", "Q8_0", LOSSLESS),
    ("int8-channel", "compressed-tensors", "pack-quantized int8 channel sym", LOSSLESS),
    ("int3-g32", "compressed-tensors", "pack-quantized int3 group 32 asym", LOSSLESS),
    ("hqq-g32", "gguf", "Q4_1", ROUNDED),
    ("hqq-g32", "compressed-tensors", "pack-quantized int4 group 32 asym", {"requantized"}),
    ("gptq-actorder-group", "gguf", "Q4_1", {"requantized"}),
    ("gptq-actorder-group", "compressed-tensors", "pack-quantized int4 group 32 asym", {"requantized"}),
    ("smoothquant", "gguf", "Q8_0", ROUNDED),
    ("smoothquant", "compressed-tensors", "int-quantized int8 channel sym + int8 dynamic per-token inputs", LOSSLESS),
    ("fp8", "gguf", "Q8_0", {"requantized"}),
    ("fp8", "compressed-tensors", "float-quantized float8 channel sym", LOSSLESS),
    ("sparsegpt-50", "compressed-tensors", "float float32", {"dense"}),
    ("svd", "gguf", "F32", {"dense"}),
    ("structured-half", "transformers", "float float32", {"dense"}),
]
# max |logits - lab's compressed model's| / max |lab's logits|: the lab's int4/int8 CPU kernels compute in bf16
LAB_KERNEL_TOL = 0.03
EXACT_TOL = 1e-4  # against a dense fp32 copy of the lab's weights, when every weight is exact


def _decoder_notes(result):
    return [n for n in result.notes if ".layers." in n.name]


@pytest.mark.parametrize("recipe,fmt,written_as,statuses", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_round_trip_through_the_formats_reader(recipe, fmt, written_as, statuses, compressed_tiny, demo_tokenizer,
                                               tmp_path):
    model = compressed_tiny(recipe)
    result = export_model(model, demo_tokenizer, fmt, tmp_path)
    notes = _decoder_notes(result)
    assert len(notes) == 14 and {n.written_as for n in notes} == {written_as}
    assert {n.status for n in notes} <= statuses
    assert all((n.max_abs_err == 0) == (n.status in ("lossless", "dense")) for n in notes)

    loaded = load_export(tmp_path, fmt)
    ids = probe_ids(VOCAB)
    with torch.no_grad():  # first: compressed-tensors decompresses symmetric weights on the first forward
        out = loaded(input_ids=ids).logits
        lab = model(input_ids=ids).logits
        dense = dense_reference(model)(input_ids=ids).logits
    got, ref = loaded.state_dict(), lab_weights(model)
    for n in result.notes:  # the reader sees exactly what the note reports
        assert float((got[f"{n.name}.weight"].float() - ref[n.name]).abs().max()) == n.max_abs_err, n.name
    scale = float(lab.abs().max())
    if not statuses & {"requantized"}:
        assert float((out - lab).abs().max()) <= LAB_KERNEL_TOL * scale
    if result.lossless and recipe != "smoothquant":  # W8A8 also quantizes activations: no dense equivalent
        assert float((out - dense).abs().max()) <= EXACT_TOL * scale


@pytest.mark.parametrize("recipe", ["int4-g32-asym", "smoothquant", "fp8"])
def test_gguf_reader_lists_the_types_the_notes_say(recipe, compressed_tiny, demo_tokenizer, tmp_path):
    import gguf

    result = export_model(compressed_tiny(recipe), demo_tokenizer, "gguf", tmp_path)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / GGUF_FILE).tensors}
    for n in result.notes:
        assert types[names.get_name(n.name) + ".weight"] == n.written_as
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_requantized_error_is_measured_and_bounded(compressed_tiny, demo_tokenizer, tmp_path):
    """HQQ's fractional zeros: Q4_1 keeps them to fp16 rounding, compressed-tensors' integer zero points cost
    about half a quantization step (at most one: the refit scale moves the ends of the range)."""
    model = compressed_tiny("hqq-g32")
    gguf_notes = _decoder_notes(export_model(model, demo_tokenizer, "gguf", tmp_path / "g"))
    ct_notes = _decoder_notes(export_model(model, demo_tokenizer, "compressed-tensors", tmp_path / "c"))
    for g, c in zip(gguf_notes, ct_notes, strict=True):
        step = float(model.get_submodule(g.name).scales.float().max())
        assert 0 < g.max_abs_err < 0.01 * step < c.max_abs_err <= step
        assert g.sqnr_db > 50 > 15 < c.sqnr_db


def test_sparsity_and_tied_head_are_noted(compressed_tiny, demo_tokenizer, tmp_path):
    result = export_model(compressed_tiny("sparsegpt-50"), demo_tokenizer, "compressed-tensors", tmp_path)
    zeros = [m for m in result.model_notes if "zeros stored densely" in m]
    assert len(zeros) == 14 and all("50.0%" in m for m in zeros)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "quantization_config" not in cfg and len(cfg["compression_lab_export"]["sparsity"]) == 14


def test_structured_pruning_writes_the_smaller_config(compressed_tiny, demo_tokenizer, tmp_path):
    model = compressed_tiny("structured-half")
    export_model(model, demo_tokenizer, "compressed-tensors", tmp_path)
    cfg = load_export(tmp_path, "compressed-tensors").config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, cfg.head_dim) == (2, 2, 192, 32)
    assert not hasattr(cfg, "pruned_layout")


@pytest.mark.parametrize("quantize_head", [False, True])
def test_tied_embeddings(quantize_head, demo_tokenizer, tmp_path):
    """A tied head is written once and loads tied; a head the recipe quantized is its own weight in the export."""
    import compressor
    from tests.helpers import tiny_llama

    model = tiny_llama(vocab=VOCAB)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    stage = {"method": "rtn", "bits": 8, "group_size": -1, "symmetric": True}
    if quantize_head:
        stage["ignore"] = [r"(^|\.)embed"]
    model, _ = compressor.compress(model, {"stages": [stage]})
    result = export_model(model, demo_tokenizer, "compressed-tensors", tmp_path)
    loaded = load_export(tmp_path, "compressed-tensors")
    with torch.no_grad():
        loaded(input_ids=probe_ids(VOCAB))  # decompress
    assert loaded.config.tie_word_embeddings is not quantize_head
    head = loaded.lm_head.weight.float()
    assert torch.equal(head, lab_weights(model)["lm_head"]) and any("lm_head" == n.name for n in result.notes) \
        if quantize_head else torch.equal(head, model.model.embed_tokens.weight)


def test_mixed_precision_symmetric_loads_each_scheme(compressed_tiny, demo_tokenizer, tmp_path):
    model = compressed_tiny("mixed-sym")
    result = export_model(model, demo_tokenizer, "compressed-tensors", tmp_path, verify=True)
    assert {n.written_as for n in _decoder_notes(result)} == {"pack-quantized int4 group 32 sym",
                                                              "pack-quantized int8 channel sym"}
    loaded = load_export(tmp_path, "compressed-tensors")
    with torch.no_grad():
        loaded(input_ids=probe_ids(VOCAB))  # decompress
    got = loaded.state_dict()
    for name, w in lab_weights(model).items():
        assert torch.equal(got[f"{name}.weight"].float(), w), name


def test_mixed_precision_asymmetric_says_transformers_cannot_load_it(compressed_tiny, demo_tokenizer, tmp_path):
    """transformers 5.24 decodes every layer with the first scheme when dequantizing at load (down_proj came
    out 0.09 off): the export must not ask for that, and says so instead of verifying."""
    import json

    result = export_model(compressed_tiny("mixed-asym"), demo_tokenizer, "compressed-tensors", tmp_path, verify=True)
    assert result.lossless and not result.transformers_loads and result.logits_max_abs_err is None
    qcfg = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert "dequantize" not in qcfg and len(qcfg["config_groups"]) == 2
