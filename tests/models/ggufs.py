"""Writing GGUF files in tests: a tiny Llama as llama.cpp's converter would write it, with the `gguf` package."""

from __future__ import annotations

import torch

# HF name inside a decoder layer -> llama.cpp's (convert_hf_to_gguf.py's tensor map for Llama)
LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's rotary layout for q/k rows (convert_hf_to_gguf.py LlamaModel.permute); transformers undoes it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _byte_tokens() -> list[str]:
    """GPT-2's byte-level alphabet (one token per byte), then "hi", made by the file's one merge "h i"."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)] + ["hi"]


def write_gguf(model, path, qtype=None) -> None:
    """`model` (tests.helpers.tiny_llama) as a llama GGUF: F32 tensors, or `qtype` (a GGMLQuantizationType
    quantized by the gguf package's own numpy quantizer) for the 2-D weights of the decoder layers."""
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(_byte_tokens())
    w.add_token_types([1] * 257)
    w.add_token_merges(["h i"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": sd.pop("model.embed_tokens.weight"),
               "output_norm.weight": sd.pop("model.norm.weight"), "output.weight": sd.pop("lm_head.weight")}
    for i in range(cfg.num_hidden_layers):
        for hf, ggml in LAYER_NAMES.items():
            t = sd.pop(f"model.layers.{i}.{hf}.weight")
            t = _permute(t, heads) if ggml == "attn_q" else _permute(t, kv) if ggml == "attn_k" else t
            tensors[f"blk.{i}.{ggml}.weight"] = t
    assert not sd, f"tensors left unwritten: {list(sd)}"
    for name, t in tensors.items():
        data = t.numpy()
        if qtype is not None and t.dim() == 2 and name.startswith("blk."):
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
