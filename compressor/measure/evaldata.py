"""Offline evaluation data that exists wherever Python runs.

Held-out text comes from the docstrings of the Python standard library, read from the source files
with `ast` (nothing is imported, so no module side effects). Modules are split into a training half
and an evaluation half by a fixed hash of their path, so the bundled demo model never saw the
evaluation text. Docstrings change a little between Python versions, so perplexities are comparable
within one Python version; the report records it.

Arithmetic problems live in `assets/eval/arithmetic.jsonl`, written by `scripts/make_eval_data.py`
from the generator below; the same held-out rule keeps them out of the demo model's training data.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.paths import ASSETS

if TYPE_CHECKING:
    import torch

    from compressor.measure.settings import EvalSettings

EVAL_DIR = ASSETS / "eval"

# One module in EVAL_SHARE goes to the evaluation split (by CRC32 of its relative path).
EVAL_SHARE = 4
# Docstrings shorter than this are mostly one-liners ("Return self.") and teach nothing.
MIN_DOC_CHARS = 200


def _is_eval_path(rel: str) -> bool:
    return zlib.crc32(rel.encode()) % EVAL_SHARE == 0


def _stdlib_sources() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in skip for part in rel.split("/")):
            continue
        out.append((rel, path))
    return out


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_DOC_CHARS:
                yield doc.strip()


@functools.lru_cache(maxsize=2)
def stdlib_docstrings(split: str) -> tuple[str, ...]:
    """Docstrings of the standard library, `split` = "train" or "eval" (disjoint by module).

    Parsing the library takes seconds, so each split is read once per process."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    want_eval = split == "eval"
    docs = []
    for rel, path in _stdlib_sources():
        if _is_eval_path(rel) == want_eval:
            docs.extend(_docstrings(path))
    return tuple(docs)


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
