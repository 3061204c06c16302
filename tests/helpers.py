"""Tiny models for tests, built from a config in code (no downloads)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(hidden: int = 128, intermediate: int = 256, layers: int = 2, heads: int = 4,
               kv_heads: int | None = None, vocab: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised Llama whose linear shapes are multiples of 128 (group size 128 works)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def random_tokens(n: int, length: int, vocab: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, length), generator=g)  # (n, length)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for serving the app in tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model_folder(tmp_path, monkeypatch):
    """A 2-layer Llama with 256 positions and the demo's tokenizer (which prepends BOS), in the data
    folder (where local models may live). Use it behind a `tiny_folder` fixture."""
    import shutil

    from compressor.models.loading import DEMO_DIR

    data = tmp_path / "data"
    monkeypatch.setenv("LAB_DATA_DIR", str(data))
    folder = data / "tiny"
    tiny_llama(vocab=4096).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_DIR / name, folder / name)
    return folder
