"""Write assets/eval/arithmetic.jsonl: held-out arithmetic problems with answers (fixed seed).

Run: python -m scripts.make_eval_data
"""

import json
import random

from compressor.measure.evaldata import EVAL_DIR, format_problem, is_held_out

# (kind, op, lo, hi, style, count): 2-digit addition is the headline stress test.
PLAN = [
    ("add2", "+", 10, 99, "plain", 400),
    ("add3", "+", 100, 999, "plain", 100),
    ("sub2", "-", 10, 99, "plain", 100),
    ("sub3", "-", 100, 999, "plain", 100),
    ("add2", "+", 10, 99, "word", 50),
    ("sub2", "-", 10, 99, "word", 50),
]


def main() -> None:
    rng = random.Random(1234)
    rows, seen = [], set()
    for kind, op, lo, hi, style, count in PLAN:
        n = 0
        while n < count:
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            if op == "-" and b > a:
                a, b = b, a
            if not is_held_out(a, op, b) or (a, op, b, style) in seen:
                continue
            seen.add((a, op, b, style))
            prompt, answer = format_problem(a, op, b, style)
            rows.append({"prompt": prompt, "answer": answer, "kind": kind, "style": style})
            n += 1
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    with open(EVAL_DIR / "arithmetic.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} problems to {EVAL_DIR / 'arithmetic.jsonl'}")


if __name__ == "__main__":
    main()
