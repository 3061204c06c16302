"""Offline evaluation data, chosen to fit the model measured (`eval_profile(tokenizer)`).

Profiles (the report records which one ran, `EvalProfile.to_dict()`):
  - "lab": models with the demo model's tokenizer (the demo and anything compressed from it). Held-out
    text is the evaluation half of the standard-library docstrings (compressor.engine.text; the demo
    model trained on the other half, and calibration uses it too); arithmetic is
    `assets/eval/arithmetic.jsonl` (the demo's own formats, held-out problems); prompts are plain text.
  - "chat": models with a chat template (instruct models such as SmolLM2-135M-Instruct). Every prompt
    goes through the template. Arithmetic is the 100 single-digit additions and 55 subtractions, asked
    "Calculate 3 + 4." with the answer's start "3 + 4 =" prefilled, a format on which SmolLM2-135M-Instruct
    scores well above 50% (its raw "27+58=" is ~0%), so compression has room to make it fall.
  - "base": other models: the same text as "chat", arithmetic as three-shot "Q: What is 3 + 4?\nA: 7".
Held-out text for "chat" and "base" is the tz database's NEWS for its 2025 and 2026 releases
(`assets/eval/tz_news_2025_2026.txt`, public domain): written after the pretrained models the lab offers
were released (SmolLM2: November 2024), so it cannot be in their training data; the standard library's
docstrings are on every code corpus a real model saw.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.engine.text import stdlib_docstrings
from compressor.paths import ASSETS

if TYPE_CHECKING:
    import torch

    from compressor.measure.settings import EvalSettings

EVAL_DIR = ASSETS / "eval"
DEMO_TOKENIZER = ASSETS / "models" / "lab-llama-7m" / "tokenizer.json"
NEWS_FILE = EVAL_DIR / "tz_news_2025_2026.txt"

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


def prompt_answers(prompts: list[str], path: Path | None = None) -> list[str | None]:
    """The known answer of each prompt (the file's optional `answers`: prompt -> answer, for arithmetic
    prompts), None where there is none; the samples show a right/wrong mark where there is one."""
    answers = json.loads((path or EVAL_DIR / "prompts.json").read_text()).get("answers", {})
    return [answers.get(p) for p in prompts]


def news_text() -> str:
    """The held-out text for pretrained models: tz NEWS, releases 2025a to 2026f (public domain)."""
    return NEWS_FILE.read_text()


def single_digit_problems() -> list[tuple[int, str, int]]:
    """All 100 single-digit additions and the 55 subtractions without a negative answer, in one fixed
    shuffled order, so the first N of them (arithmetic_samples) mix both."""
    problems = [(a, "+", b) for a in range(10) for b in range(10)] + \
        [(a, "-", b) for a in range(10) for b in range(10) if a >= b]
    random.Random(15).shuffle(problems)
    return problems


def chat_arithmetic(tokenizer) -> list[dict]:
    """The "chat" profile's problems: "Calculate a op b." as a user turn, "a op b =" prefilled."""
    from compressor.measure.generation import chat_prompt

    out = []
    for a, op, b in single_digit_problems():
        question = f"Calculate {a} {op} {b}."
        out.append({"prompt": chat_prompt(tokenizer, question, f"{a} {op} {b} ="), "question": question,
                    "answer": str(a + b if op == "+" else a - b), "kind": "add1" if op == "+" else "sub1",
                    "style": "chat"})
    return out


FEW_SHOT = ((2, "+", 5), (9, "-", 4), (6, "+", 1))  # not among the problems asked after them


def few_shot_arithmetic() -> list[dict]:
    """The "base" profile's problems: three solved examples, then the question."""
    shots = "".join(f"Q: What is {a} {op} {b}?\nA: {a + b if op == '+' else a - b}\n\n" for a, op, b in FEW_SHOT)
    return [{"prompt": f"{shots}Q: What is {a} {op} {b}?\nA:", "question": f"What is {a} {op} {b}?",
             "answer": str(a + b if op == "+" else a - b), "kind": "add1" if op == "+" else "sub1",
             "style": "few-shot"}
            for a, op, b in single_digit_problems() if (a, op, b) not in FEW_SHOT]


# --- which data fits which model -----------------------------------------------------------------

@dataclass(frozen=True)
class EvalProfile:
    """What a model is measured on, chosen from its tokenizer (`eval_profile`); recorded in reports."""

    name: str  # "lab", "chat" or "base"
    text: str  # the held-out text, with its source and licence
    arithmetic: str  # the problems and their format
    prompts: str  # how sample prompts are written

    def to_dict(self) -> dict:
        return asdict(self)


LAB_TEXT = "Python standard-library docstrings, evaluation split (held out from the demo model's training)"
NEWS = ("tz database NEWS, releases 2025a-2026f (public domain; written after the model's release, so not in its "
        "training data)")
PROFILES = {
    "lab": EvalProfile("lab", LAB_TEXT, "assets/eval/arithmetic.jsonl: 2- and 3-digit add/subtract, word problems, "
                       "the demo model's formats", "plain text"),
    "chat": EvalProfile("chat", NEWS, "single-digit add/subtract through the chat template ('Calculate 3 + 4.'), "
                        "answer start '3 + 4 =' prefilled", "user turns through the chat template"),
    "base": EvalProfile("base", NEWS, "single-digit add/subtract, three-shot 'Q: What is 3 + 4?\\nA:'",
                        "plain text"),
}


@functools.lru_cache(maxsize=1)
def _lab_vocab_digest() -> str:
    spec = json.loads(DEMO_TOKENIZER.read_text())
    vocab = dict(spec["model"]["vocab"]) | {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    return _vocab_digest(vocab)


def _vocab_digest(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


def eval_profile(tokenizer) -> EvalProfile:
    """"lab" for the demo model's tokenizer, else "chat" with a chat template, else "base" (see the module
    docstring). Keyed on the tokenizer, so a compressed copy of a model is measured as its original."""
    from compressor.measure.generation import has_chat_template

    vocab = tokenizer.get_vocab()
    if len(vocab) < 10_000 and _vocab_digest(vocab) == _lab_vocab_digest():  # the demo's is 4096 tokens
        return PROFILES["lab"]
    return PROFILES["chat" if has_chat_template(tokenizer) else "base"]


# --- what one run is measured on ----------------------------------------------------------------

# Held-out characters tokenized for perplexity: ~4 characters per token with room to spare.
CHARS_PER_TOKEN = 6


@dataclass
class EvalData:
    """What a baseline and its compressed model are both measured on: held-out tokens ([ppl_tokens + 1],
    fewer when the text is shorter), arithmetic problems and side-by-side sample prompts as fed to the
    model (`prompts`), what a reader sees of each prompt (`prompt_labels`: the user's message when a chat
    template wraps it), and the profile that chose them."""

    tokens: torch.Tensor
    problems: list[dict]
    prompts: list[str]
    prompt_labels: list[str] = field(default_factory=list)
    profile: EvalProfile | None = None
    expected: list[str | None] = field(default_factory=list)  # per prompt: its known answer, or None

    @property
    def labels(self) -> list[str]:
        return self.prompt_labels or self.prompts


def load_eval_data(tokenizer, settings: EvalSettings) -> EvalData:
    """The evaluation data for `settings` and this tokenizer's model (`eval_profile`), tokenized by it."""
    from compressor.measure.generation import chat_prompt
    from compressor.measure.quality import eval_tokens

    profile = eval_profile(tokenizer)
    text = held_out_text() if profile.name == "lab" else news_text()
    tokens = eval_tokens(tokenizer, text[: settings.ppl_tokens * CHARS_PER_TOKEN], settings.ppl_tokens)
    if tokens.numel() <= settings.ppl_tokens:  # text denser than expected: use all of it
        tokens = eval_tokens(tokenizer, text, settings.ppl_tokens)
    n = settings.arithmetic_samples
    if profile.name in ("lab", "base"):
        prompts = load_prompts()
        problems = load_arithmetic()[:n] if profile.name == "lab" else few_shot_arithmetic()[:n]
        return EvalData(tokens, problems, prompts, profile=profile, expected=prompt_answers(prompts))
    labels = load_prompts(EVAL_DIR / "prompts_chat.json")
    return EvalData(tokens, chat_arithmetic(tokenizer)[:n], [chat_prompt(tokenizer, u) for u in labels], labels,
                    profile)
