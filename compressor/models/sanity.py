"""Is a model config plausible? Checked on the plain values, before any module is built.

A config.json (or GGUF header) is read from a file anyone can write. Building even a meta-device model
from `num_hidden_layers: 10000000` takes minutes and memory, and a zero or negative size fails deep in
torch with a message about tensors. `check_config` refuses such values first, naming the field, the value
and what real models have; `estimate_params` sizes a decoder-only transformer from the same fields so a
model far beyond this machine is refused before its modules exist.
"""

from __future__ import annotations

from compressor.errors import ModelLoadError

# (field, lowest, highest): far outside every released model, close enough to catch a corrupt file.
BOUNDS = (
    ("num_hidden_layers", 1, 1024),
    ("hidden_size", 8, 131_072),
    ("intermediate_size", 1, 1_048_576),
    ("num_attention_heads", 1, 1024),
    ("num_key_value_heads", 1, 1024),
    ("head_dim", 1, 4096),
    ("vocab_size", 2, 4_194_304),
    ("max_position_embeddings", 1, 16_777_216),
)
# Beyond this no machine the lab runs on could hold the model even on disk.
MAX_PARAMS = 2 * 10**12


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: dict, where: str) -> None:
    """ModelLoadError when a field of `cfg` (a text model's config as a dict) is missing or absurd."""
    for name, lo, hi in BOUNDS:
        value = cfg.get(name)
        if value is None and name in ("num_hidden_layers", "hidden_size", "vocab_size"):
            raise ModelLoadError(f"The config of {where} has no {name}: the lab needs a decoder-only language model "
                                 "(LlamaForCausalLM, Qwen2ForCausalLM, ...) whose config names its layers and sizes.")
        if value is None:
            continue
        if name == "intermediate_size" and isinstance(value, list):  # per-layer widths (OpenELM-style)
            value = max(value) if value and all(_int(v) for v in value) else value
        if not _int(value) or not lo <= value <= hi:
            raise ModelLoadError(f"The config of {where} says {name}={value!r}, outside what real models have "
                                 f"({lo}..{hi}): the file is corrupt or not a model config. Check it, or convert the "
                                 "model again.")
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if _int(heads) and _int(kv) and heads % kv:
        raise ModelLoadError(f"The config of {where} says num_attention_heads={heads} and num_key_value_heads={kv}: "
                             "the query heads must split evenly over the KV heads. The file is inconsistent.")
    if _int(heads) and cfg.get("head_dim") is None and cfg["hidden_size"] % heads:
        raise ModelLoadError(f"The config of {where} says hidden_size={cfg['hidden_size']} and num_attention_heads="
                             f"{heads}, which do not divide and give no head_dim. The file is inconsistent.")
    n = estimate_params(cfg)
    if n > MAX_PARAMS:
        raise ModelLoadError(f"The config of {where} describes about {n / 1e12:.0f}T parameters: far beyond what this "
                             "lab can compress. Pick a smaller model.")


def estimate_params(cfg: dict) -> int:
    """Parameters of a decoder-only transformer from its config (Llama layout: attention with KV heads,
    gated MLP, embeddings and an untied head). An estimate for the memory check before the meta model."""
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads = cfg.get("num_attention_heads") or 1
    head_dim = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    inter = cfg.get("intermediate_size") or 4 * h
    inter = max(inter) if isinstance(inter, list) else inter
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter * (experts if _int(experts) and experts > 0 else 1)
    head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    return layers * (attn + mlp) + vocab * h + head
