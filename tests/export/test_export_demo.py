"""The bundled demo model, compressed with `compressor.compress`, exported and read back by the formats' readers.

GGUF: transformers' GGUF reader (`gguf_file=`) loads weights equal to the lab's bit for bit where the note
says lossless, and a tokenizer (with the chat template) that encodes exactly as the original does.
compressed-tensors: `AutoModelForCausalLM.from_pretrained(folder)` gives the lab's weights and logits.
"""

from __future__ import annotations

import pytest
import torch

from compressor.export import GGUF_FILE, export_model
from compressor.export.verify import probe_ids
from tests.export.conftest import lab_weights

TEMPLATE = "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
TEXTS = ["Hello world! 12345 + 678 = 999", "  two spaces\n\nnew lines\ttab (paren) 'quote' don't",
         "ünïcödé 中文 😀", "<|endoftext|>after a special token"]


@pytest.fixture(scope="module")
def demo():
    """compressed demo models by recipe name, built once per module: (model, tokenizer with a chat template)."""
    import compressor
    from compressor.models.loading import load_model

    cache = {}

    def get(recipe):
        key = str(recipe)
        if key not in cache:
            model, tokenizer = load_model("demo")
            tokenizer.chat_template = TEMPLATE
            cache[key] = (compressor.compress(model, recipe)[0], tokenizer)
        return cache[key]

    return get


def test_gguf_q4_0_is_bit_exact_through_transformers_reader(demo, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = demo({"stages": [{"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}]})
    result = export_model(model, tokenizer, "gguf", tmp_path)
    decoder = [n for n in result.notes if ".layers." in n.name]
    assert len(decoder) == 42 and {(n.written_as, n.status) for n in decoder} == {("Q4_0", "lossless")}
    assert result.lossless  # the demo's fp16 embeddings and head are exact in F16 too

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=GGUF_FILE, dtype=torch.float32)
    got = loaded.state_dict()
    for name, w in lab_weights(model).items():
        assert torch.equal(got[f"{name}.weight"], w), name

    reread = AutoTokenizer.from_pretrained(tmp_path, gguf_file=GGUF_FILE)
    for text in TEXTS:
        assert reread(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert reread.chat_template == TEMPLATE
    chat = [{"role": "user", "content": "What is 2+2?"}]
    assert reread.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_gguf_reader_types_on_the_demo(demo, tmp_path):
    import gguf

    result = export_model(demo("int8")[0], demo("int8")[1], "gguf", tmp_path)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / GGUF_FILE).tensors}
    assert types["blk.5.ffn_down.weight"] == "Q8_0" and types["token_embd.weight"] == "F16"
    assert types["output_norm.weight"] == "F32"
    assert {n.written_as for n in result.notes if ".layers." in n.name} == {"Q8_0"} and result.lossless


def test_compressed_tensors_preset_loads_with_from_pretrained(demo, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = demo("w4-g128")
    result = export_model(model, tokenizer, "compressed-tensors", tmp_path, verify=True)
    assert result.lossless and result.counts()["lossless"] == 42
    ids = probe_ids(model.config.vocab_size)
    with torch.no_grad():
        lab = model(input_ids=ids).logits
        # as a user loads it: config.json says float16 (the demo's own dtype), so transformers computes in fp16
        default = AutoModelForCausalLM.from_pretrained(tmp_path)
        assert default.dtype == torch.float16
        out16 = default(input_ids=ids).logits.float()
        exact = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
        out32 = exact(input_ids=ids).logits
    # the lab's int4 CPU kernel computes in bf16, the default load in fp16; the fp32 load has the lab's weights
    scale = float(lab.abs().max())
    assert float((out16 - lab).abs().max()) <= 0.03 * scale
    assert float((out32 - lab).abs().max()) <= 0.03 * scale
    assert result.logits_max_abs_err == pytest.approx(float((out32 - lab).abs().max()), rel=1e-3, abs=1e-6)
    got = exact.state_dict()
    for name, w in lab_weights(model).items():
        assert torch.equal(got[f"{name}.weight"], w), name
