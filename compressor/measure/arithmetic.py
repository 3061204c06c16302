"""Arithmetic exact match: greedy continuation, answer parsed strictly (`parse_answer`), a Wilson score
interval on the accuracy and Newcombe's paired score interval on the compressed-minus-baseline
difference."""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import numpy as np

from compressor.measure.generation import greedy_generate

# An integer in ASCII digits: an optional sign, then thousands groups ("1,234") or a plain run of
# digits, not glued to a word, a decimal point or a comma before it ("x85", ".85"). What follows is
# judged by _END.
_NUMBER = re.compile(r"(?<![\w.,])[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)")
# What may follow the answer: closing punctuation or brackets, then a space or the end of the line.
# Anything else ("85.7", "85-3=82", "85%", "85th", "1,23") means the token is not this integer.
_END = re.compile(r"[.,;:!?)\]}*\"'\u201d\u2019]*(?:\s|$)")
# The end of the sentence holding the answer: . ! or ? followed by a space or the end of the line.
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_DIGIT = re.compile(r"\d")  # any script's digits: only ASCII ones answer, but all of them compete
_PREFIX = re.compile(r"^\s*(?:(?:the\s+)?answer(?:\s+is)?\s*[:=]?|=)\s*", re.IGNORECASE)


def parse_answer(text: str) -> str | None:
    """The integer a model answered with, as a canonical string, or None.

    The rules, chosen so that a wrong answer never reads as a right one:

    - Only the first non-empty line counts: a wrong first line is not rescued by a later number.
    - An optional "Answer:", "the answer is" or "=" prefix and leading spaces are skipped.
    - The answer is the first number on that line, and it must be an integer in ASCII digits with an
      optional sign and thousands commas ("1,234"). Digits of other scripts ("٨٥", "８５") are not
      read, and a line whose first number is not such an integer is None.
    - It must be followed by a space or the end of the line, after optional closing punctuation
      (. , ; : ! ? brackets, quotes). So "85.", "85 apples" and "85, apples" read as 85, while a
      decimal ("85.7"), a computation that goes on ("85-3=82") or a malformed group ("1,23") is None.
    - The rest of its sentence (up to . ! or ? and a space) holds no other digit: a line offering
      several candidates ("85 or 86", "85, 86, 87", "12, 34") is None. A new sentence may follow
      ("85. Next: 27+58=85" reads as 85).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    line = _PREFIX.sub("", lines[0], count=1)
    m = _NUMBER.search(line)
    if m is None or _DIGIT.search(line, 0, m.start()) or not _END.match(line, m.end()):
        return None
    end = _SENTENCE_END.search(line, m.end())
    if _DIGIT.search(line, m.end(), end.start() if end else len(line)):
        return None
    return str(int(m.group(0).replace(",", "").replace("\u2212", "-")))


def wilson_ci(correct, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for the success rate of 0/1 outcomes (Wilson 1927,
    https://doi.org/10.1080/01621459.1927.10502953; method 3 of Newcombe 1998,
    https://doi.org/10.1002/(SICI)1097-0258(19980430)17:8<857::AID-SIM777>3.0.CO;2-E).

    Unlike a percentile bootstrap it keeps a width at 0% and 100%: 8/8 gives [0.68, 1.0], as 8 in a
    row still happens 6% of the time at a true rate of 0.7. (nan, nan) for no outcomes.
    """
    n, k = len(correct), sum(int(c) for c in correct)
    if n == 0:
        return (float("nan"), float("nan"))
    return _wilson(k, n, NormalDist().inv_cdf(1 - alpha / 2))


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 or k = n one end is exactly 0 or 1; rounding must not move it
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def paired_diff_ci(a, b, alpha: float = 0.05) -> tuple[float, float]:
    """Interval for mean(b) - mean(a), where a[i] and b[i] are 0/1 outcomes on the same item i.

    Newcombe's hybrid score interval for the difference of paired proportions (method 10 of
    Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
    based on paired data", Statistics in Medicine 17:2635-2650): the Wilson intervals of both rates,
    combined by "square and add" with the estimated correlation phi between them. It stays honest with
    few discordant pairs, where a bootstrap collapses: identical outcomes on 8 items give
    [-0.32, 0.32], not [0, 0].

    With counts n11 (both right), n12 (only b right), n21 (only a right), n22 (both wrong):
    theta = (n12 - n21) / n; phi = (n11 n22 - n12 n21) / sqrt(product of the four margins), set to 0
    when a margin is 0, reduced by n/2 towards 0 when positive (0 if that crosses 0), as Newcombe does.
    (nan, nan) when there are no items or the lengths differ.
    """
    if len(a) == 0 or len(a) != len(b):
        return (float("nan"), float("nan"))
    n11 = n12 = n21 = n22 = 0
    for x, y in zip(a, b, strict=True):
        n11 += bool(x) and bool(y)
        n12 += bool(y) and not x
        n21 += bool(x) and not y
        n22 += not x and not y
    n = n11 + n12 + n21 + n22
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p1, p2 = (n11 + n12) / n, (n11 + n21) / n  # rate of b, rate of a
    l1, u1 = _wilson(n11 + n12, n, z)
    l2, u2 = _wilson(n11 + n21, n, z)
    margins = (n11 + n12) * (n21 + n22) * (n11 + n21) * (n12 + n22)
    cross = n11 * n22 - n12 * n21
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins else 0.0
    theta = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return (max(-1.0, theta - delta), min(1.0, theta + eps))


def arithmetic_max_new_tokens(tokenizer, problems: list[dict]) -> int:
    """Enough tokens for the longest answer plus a little trailing text."""
    longest = max((len(tokenizer(" " + p["answer"], add_special_tokens=False)["input_ids"]) for p in problems),
                  default=1)
    return longest + 2


def evaluate_arithmetic(model, tokenizer, problems: list[dict]) -> dict:
    """Exact match on `problems` (dicts with prompt, answer, kind). Per-item outcomes are kept for
    paired comparisons; accuracy comes with a 95% Wilson interval and a per-kind breakdown.
    `max_tokens`: the longest prompt (as the tokenizer encodes it) plus the new tokens generated, the
    most positions a KV cache holds during the evaluation."""
    if not problems:
        return {"accuracy": None, "n": 0, "ci95": None, "correct": [], "by_kind": {}, "examples": [],
                "max_tokens": None}
    n_new = arithmetic_max_new_tokens(tokenizer, problems)
    texts = greedy_generate(model, tokenizer, [p["prompt"] for p in problems], n_new)
    correct = [parse_answer(t) == p["answer"] for t, p in zip(texts, problems, strict=True)]
    by_kind: dict[str, list[bool]] = {}
    for ok, p in zip(correct, problems, strict=True):
        by_kind.setdefault(p.get("kind", "all"), []).append(ok)
    return {
        "accuracy": float(np.mean(correct)), "n": len(correct), "ci95": list(wilson_ci(correct)),
        "correct": [int(c) for c in correct],
        "by_kind": {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_kind.items())},
        "examples": [{"prompt": p["prompt"], "answer": p["answer"], "output": t}
                     for p, t in list(zip(problems, texts, strict=True))[:5]],
        "max_tokens": max(len(tokenizer(p["prompt"])["input_ids"]) for p in problems) + n_new,
    }
