"""A transformers tokenizer as GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys), or a refusal.

GGUF carries no tokenizer.json: llama.cpp rebuilds the tokenizer from the vocabulary, the merges and a
named pre-tokenizer (`tokenizer.ggml.pre`), which selects a splitting regex compiled into llama.cpp. So
only tokenizers whose splitting llama.cpp knows by name can be written faithfully:

    tokenizer.json pre_tokenizer                              tokenizer.ggml.pre
    ByteLevel (GPT-2 regex)                                   "gpt-2"
    Sequence [Digits(individual), ByteLevel (GPT-2 regex)]    "smollm"   (the demo model's, SmolLM's)

Others are refused, naming the formats that carry tokenizer.json as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from compressor.export.result import ExportRefused

# gguf.TokenType values (llama.cpp's llama_token_type)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class GgufVocab:
    """Everything the writer puts under tokenizer.ggml.* (and the chat template)."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos/eos/pad/unk -> id
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _is_gpt2_bytelevel(p: dict) -> bool:
    return p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space", False)


def _pre_name(pre: dict | None) -> str | None:
    if pre is None:
        return None
    if _is_gpt2_bytelevel(pre):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        if len(parts) == 2 and parts[0].get("type") == "Digits" and parts[0].get("individual_digits") \
                and _is_gpt2_bytelevel(parts[1]):
            return "smollm"
    return None


def _adds(tokenizer, text: str = "a") -> tuple[bool, bool]:
    """Whether encoding adds BOS in front / EOS behind (read from the tokenizer's own behaviour)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos, eos, n = tokenizer.bos_token_id, tokenizer.eos_token_id, len(plain)
    add_bos = bos is not None and len(ids) > n and ids[0] == bos and ids[1:1 + n] == plain
    add_eos = eos is not None and len(ids) > n and ids[-1] == eos and ids[-1 - n:-1] == plain
    return add_bos, add_eos


def read_vocab(tokenizer, vocab_size: int, fmt: str = "GGUF") -> GgufVocab:
    """GGUF tokenizer metadata for a byte-level BPE tokenizer padded to the model's `vocab_size` rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportRefused(fmt, f"a {type(tokenizer).__name__} tokenizer without a tokenizers backend",
                            "export to compressed-tensors or transformers, which keep tokenizer files as they are")
    spec = json.loads(backend.to_str())
    model, pre = spec.get("model", {}), _pre_name(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or pre is None or spec.get("normalizer") is not None:
        what = f"model {model.get('type')}, pre-tokenizer {json.dumps(spec.get('pre_tokenizer'))[:120]}"
        raise ExportRefused(fmt, f"this tokenizer ({what}): llama.cpp rebuilds tokenizers from a named splitting "
                            "rule and this writer knows byte-level BPE with GPT-2 splitting (optionally digits "
                            "split first)", "export to compressed-tensors or transformers, which keep "
                            "tokenizer.json as it is")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    n = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [UNUSED] * n
    for tok, i in vocab.items():
        tokens[i] = tok
        a = added.get(tok)
        types[i] = NORMAL if a is None else (CONTROL if a.get("special") else USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    special = {}
    for key in ("bos", "eos", "pad", "unk"):
        tid = getattr(tokenizer, f"{key}_token_id", None)
        if tid is not None:
            special[key] = int(tid)
    add_bos, add_eos = _adds(tokenizer)
    template = getattr(tokenizer, "chat_template", None)
    return GgufVocab(pre, tokens, types, merges, special, add_bos, add_eos,
                     template if isinstance(template, str) else None)


def write_vocab(writer, v: GgufVocab) -> None:
    """Put the vocabulary on a gguf.GGUFWriter."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.token_types)
    writer.add_token_merges(v.merges)
    for key, tid in v.special_ids.items():
        getattr(writer, f"add_{key}_token_id")(tid)
    writer.add_add_bos_token(v.add_bos)
    writer.add_add_eos_token(v.add_eos)
    if v.chat_template:
        writer.add_chat_template(v.chat_template)
