"""Calibration tokens: text -> a [n_samples, seq_len] token tensor, sized for a 2-core CPU by default.

Sources:
  - "builtin": the training split of the standard-library docstrings
    (`compressor.engine.text.stdlib_docstrings("train")`). Not the held-out evaluation text: calibrating
    on the text that perplexity is measured on would flatter the calibrated methods.
  - any other text the user gives;
  - "hub:<dataset id>" (or a bare "org/name"): the text column of a hub dataset, when online and the
    `datasets` package is installed.

Samples are `seq_len`-token windows spread evenly over the tokenized text (no padding), so the same
text and sizes always give the same tokens.
"""

from __future__ import annotations

import re

import torch

from compressor.engine.text import leading_bos, stdlib_docstrings
from compressor.errors import RecipeError

DEFAULT_N_SAMPLES = 32
DEFAULT_SEQ_LEN = 256
MIN_TOKENS = 16
_HUB_ID = re.compile(r"^(hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Enough characters for the default sizes with a wide margin, so tokenizing stays fast.
BUILTIN_MAX_CHARS = 400_000


def builtin_text() -> str:
    return "\n\n".join(stdlib_docstrings("train"))[:BUILTIN_MAX_CHARS]


def _hub_text(dataset_id: str, max_chars: int) -> str:
    try:
        import datasets
    except ImportError:
        raise RecipeError("calibration", dataset_id, "hub datasets need the `datasets` package "
                          "(pip install datasets); or use 'builtin' or your own text") from None
    try:
        ds = datasets.load_dataset(dataset_id, split="train", streaming=True)
    except Exception as e:
        raise RecipeError("calibration", dataset_id, f"could not load it ({type(e).__name__}: {e}); offline, use "
                          "'builtin' or paste text") from None
    parts, size = [], 0
    for row in ds:
        text = row.get("text") or next((v for v in row.values() if isinstance(v, str)), "")
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "\n\n".join(parts)


def calibration_batches(tokenizer, source: str = "builtin", n_samples: int = DEFAULT_N_SAMPLES,
                        seq_len: int = DEFAULT_SEQ_LEN) -> torch.Tensor:
    """Token windows [n_samples, seq_len] (int64) from `source`: "builtin", text, or "hub:<id>"."""
    if not (isinstance(n_samples, int) and n_samples > 0):
        raise RecipeError("n_samples", n_samples, "use a positive number of samples, e.g. 32")
    if not (isinstance(seq_len, int) and seq_len >= MIN_TOKENS):
        raise RecipeError("seq_len", seq_len, f"use at least {MIN_TOKENS} tokens, e.g. 256")
    if source == "builtin":
        text = builtin_text()
    elif isinstance(source, str) and _HUB_ID.match(source.strip()) and " " not in source:
        text = _hub_text(source.strip().removeprefix("hub:"), BUILTIN_MAX_CHARS)
    elif isinstance(source, str):
        text = source
    else:
        raise RecipeError("calibration", type(source).__name__, "give 'builtin', text, or 'hub:<dataset id>'")
    ids = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long)  # (T,)
    if ids.numel() < MIN_TOKENS:
        raise RecipeError("calibration", text[:60], f"gives {ids.numel()} tokens; give at least {MIN_TOKENS}")
    seq_len = min(seq_len, ids.numel())
    # Evenly spread window starts; they overlap only when the text is shorter than n * seq_len.
    last = ids.numel() - seq_len
    starts = torch.linspace(0, last, n_samples).round().long() if n_samples > 1 else torch.zeros(1, dtype=torch.long)
    windows = torch.stack([ids[s:s + seq_len] for s in starts.tolist()])  # (n_samples, seq_len)
    bos = leading_bos(tokenizer)
    if bos is not None:  # such models only ever saw BOS at position 0: calibrate on what they will run
        windows[:, 0] = bos
    return windows
