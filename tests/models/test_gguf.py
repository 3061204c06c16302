"""GGUF import: a file written here with the `gguf` package from a tiny Llama loads through `load_model`
and gives that Llama's logits; its header is read without the tensors; broken files are refused."""

from __future__ import annotations

import pytest
import torch

from compressor.errors import ModelLoadError
from compressor.models.gguf_file import config_from_metadata, read_metadata
from compressor.models.loading import load_model, model_source, resolve
from tests.helpers import tiny_llama
from tests.models.ggufs import write_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    model = tiny_llama(kv_heads=2, vocab=257)
    folder = tmp_path_factory.mktemp("gguf")
    write_gguf(model, folder / "tiny.gguf")
    return model, folder / "tiny.gguf"


def test_a_gguf_file_loads_through_load_model_with_the_logits_it_was_written_from(tiny_gguf):
    ref, path = tiny_gguf
    ids = torch.tensor([[1, 5, 9, 200, 17, 3]])
    for spec in (path, path.parent):  # the file, or a folder holding one .gguf and no config.json
        model, tok = load_model(str(spec), roots=[path.parent])
        with torch.no_grad():
            assert torch.equal(model(ids).logits, ref(ids).logits)
        assert tok("hi ha")["input_ids"] == [256, *b" ha"]
        assert not hasattr(model.config, "quantization_config")  # a plain model: it compresses and saves
    assert resolve(str(path), roots=[path.parent]).source == "gguf"
    assert model_source(str(path), roots=[path.parent]) == "from a F32 GGUF, dequantized"


def test_a_quantized_gguf_records_its_type_and_loads_its_dequantized_weights(tiny_gguf, tmp_path):
    ref, _ = tiny_gguf
    q8 = gguf.GGMLQuantizationType.Q8_0
    path = tmp_path / "q8.gguf"
    write_gguf(ref, path, qtype=q8)
    meta = read_metadata(path)
    assert meta.quant_type == "Q8_0" and meta.type_counts["Q8_0"] == 2 * 7  # 2 layers x 7 projections
    info = resolve(str(path), roots=[tmp_path])
    assert info.source_note == "from a Q8_0 GGUF, dequantized"
    assert info.n_params == sum(p.numel() for p in ref.parameters())
    model, _ = load_model(str(path), roots=[tmp_path])
    w = ref.model.layers[1].mlp.down_proj.weight.detach().numpy()
    expect = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, q8), q8))  # the gguf package's own
    assert torch.equal(model.model.layers[1].mlp.down_proj.weight.detach(), expect.reshape(w.shape))


def test_the_header_gives_the_config_without_reading_tensors(tiny_gguf):
    ref, path = tiny_gguf
    cfg = config_from_metadata(read_metadata(path))
    c = ref.config
    assert (cfg["model_type"], cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"],
            cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (
        "llama", c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
        c.num_key_value_heads, c.vocab_size)
    assert cfg["tie_word_embeddings"] is False  # it has an output.weight


def test_a_gguf_outside_the_allowed_folders_is_refused(tiny_gguf, tmp_path):
    _, path = tiny_gguf
    with pytest.raises(ModelLoadError, match="outside the allowed folders"):
        resolve(str(path), roots=[tmp_path])


@pytest.mark.parametrize("damage, match", [
    (lambda b: b"GGML" + b[4:], "magic bytes"),
    (lambda b: b[:4] + (9).to_bytes(4, "little") + b[8:], "version 9"),
    (lambda b: b[:200], "runs past the end"),
    (lambda b: b[:16] + (10**9).to_bytes(8, "little") + b[24:], "key-values"),
])
def test_a_broken_gguf_is_refused_with_the_file_named(tiny_gguf, tmp_path, damage, match):
    _, path = tiny_gguf
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelLoadError, match=match) as e:
        resolve(str(bad), roots=[tmp_path])
    assert "bad.gguf" in str(e.value)
