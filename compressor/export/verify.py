"""Load an export through its format's reader in transformers and measure it against the lab's model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PROBE_TOKENS = 32


def load_export(folder: str | Path, fmt: str) -> nn.Module:
    """The export as transformers loads it (fp32): AutoModelForCausalLM, with `gguf_file=` for GGUF."""
    from transformers import AutoModelForCausalLM

    from compressor.export import GGUF_FILE

    kwargs = {"gguf_file": GGUF_FILE} if fmt == "gguf" else {}
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs).eval()


def probe_ids(vocab_size: int, n: int = PROBE_TOKENS) -> torch.Tensor:
    """A fixed, spread-out token sequence [1, n] (no tokenizer needed)."""
    return (torch.arange(n) * 7919 + 11).remainder(max(vocab_size - 1, 1)).add(1).unsqueeze(0)


@torch.no_grad()
def logits_error(model: nn.Module, folder: str | Path, fmt: str) -> tuple[float, str]:
    """(max |logits_export - logits_lab| on the probe, which reader loaded it)."""
    import transformers

    loaded = load_export(folder, fmt)
    ids = probe_ids(model.config.vocab_size)
    device = next(model.parameters()).device
    ref = model(input_ids=ids.to(device), use_cache=False).logits.float().cpu()
    got = loaded(input_ids=ids, use_cache=False).logits.float()
    reader = f"transformers {transformers.__version__}"
    if fmt == "compressed-tensors":
        import compressed_tensors

        reader += f" + compressed-tensors {compressed_tensors.__version__}"
    elif fmt == "gguf":
        import gguf

        reader += f" (gguf_file, gguf {getattr(gguf, '__version__', '')})".replace(" )", ")")
    return float((got - ref).abs().max()), reader
