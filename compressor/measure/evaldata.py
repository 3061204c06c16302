"""Offline evaluation data that exists wherever Python runs.

Held-out text is the evaluation half of the standard-library docstring corpus (compressor.engine.text,
which calibration shares, so calibration never sees it); the report records the Python version.

Arithmetic problems live in `assets/eval/arithmetic.jsonl`, written by `scripts/make_eval_data.py`
from the generator below; the same held-out rule keeps them out of the demo model's training data.
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.engine.text import stdlib_docstrings
from compressor.paths import ASSETS

if TYPE_CHECKING:
    import torch

    from compressor.measure.settings import EvalSettings

EVAL_DIR = ASSETS / "eval"

def held_out_text(max_chars: int = 200_000) -> str:
    """Evaluation text for perplexity: the eval split, in a fixed order (never used to calibrate)."""
    return "\n\n".join(stdlib_docstrings("eval"))[:max_chars]


# --- arithmetic ---------------------------------------------------------------------------------

NAMES = ("Tom", "Anna", "Ben", "Maria", "Sam", "Lucy", "Omar", "Mei")
ITEMS = ("apples", "books", "coins", "stamps", "marbles", "shells")


def is_held_out(a: int, op: str, b: int) -> bool:
    """One problem in ten is reserved for evaluation and never appears in training data."""
    return zlib.crc32(f"{a}{op}{b}".encode()) % 10 == 0


def format_problem(a: int, op: str, b: int, style: str) -> tuple[str, str]:
    """(prompt, answer) in the formats the demo model is trained on."""
    ans = str(a + b if op == "+" else a - b)
    if style == "plain":
        return f"{a}{op}{b}=", ans
    name, item = NAMES[(a + 3 * b) % len(NAMES)], ITEMS[(7 * a + b) % len(ITEMS)]
    if op == "+":
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
    else:
        q = f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have now?"
    return f"{q} Answer: ", ans


def sample_problem(rng: random.Random, held_out: bool | None = None) -> tuple[int, str, int, str, str]:
    """Draw (a, op, b, kind, style). held_out=False skips reserved problems, True keeps only them."""
    while True:
        r = rng.random()
        if r < 0.45:
            kind, op, lo, hi = "add2", "+", 10, 99
        elif r < 0.60:
            kind, op, lo, hi = "add3", "+", 100, 999
        elif r < 0.65:
            kind, op, lo, hi = "add1", "+", 0, 9
        elif r < 0.80:
            kind, op, lo, hi = "sub2", "-", 10, 99
        else:
            kind, op, lo, hi = "sub3", "-", 100, 999
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "-" and b > a:
            a, b = b, a
        style = "word" if rng.random() < 0.15 else "plain"
        if held_out is None or is_held_out(a, op, b) == held_out:
            return a, op, b, kind, style


def load_arithmetic(path: Path | None = None, kinds: tuple[str, ...] | None = None) -> list[dict]:
    """Problems from `assets/eval/arithmetic.jsonl`: dicts with prompt, answer, kind, style."""
    path = path or EVAL_DIR / "arithmetic.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if kinds is None or r["kind"] in kinds]


def load_prompts(path: Path | None = None) -> list[str]:
    """Prompts for side-by-side generation."""
    path = path or EVAL_DIR / "prompts.json"
    return json.loads(path.read_text())["prompts"]


# --- what one run is measured on ----------------------------------------------------------------

# Held-out characters tokenized for perplexity: ~4 characters per token with room to spare.
CHARS_PER_TOKEN = 6


@dataclass
class EvalData:
    """What a baseline and its compressed model are both measured on: held-out tokens ([ppl_tokens + 1]),
    arithmetic problems and side-by-side sample prompts."""

    tokens: torch.Tensor
    problems: list[dict]
    prompts: list[str]


def load_eval_data(tokenizer, settings: EvalSettings) -> EvalData:
    """The evaluation data for `settings`, tokenized by `tokenizer`."""
    from compressor.measure.quality import eval_tokens

    text = held_out_text()
    tokens = eval_tokens(tokenizer, text[: settings.ppl_tokens * CHARS_PER_TOKEN], settings.ppl_tokens)
    if tokens.numel() <= settings.ppl_tokens:  # text denser than expected: use all of it
        tokens = eval_tokens(tokenizer, text, settings.ppl_tokens)
    return EvalData(tokens, load_arithmetic()[: settings.arithmetic_samples], load_prompts())
