"""How a report's figures read, for the page and the CLI alike: one function per kind of figure.

Every function takes whatever a report holds (a number, None, NaN, infinity, a stray string) and
returns text: a diverged model's perplexity is infinite and shows as "∞"; NaN, None and anything
that is not a number show as "n/a", so no "nan" or Python repr ever reaches a reader.

    fmt_bytes(34816) -> "34.0 KiB"     fmt_pct(0.8125) -> "81.2 %"     fmt_rate(1234.5) -> "1,234"
    fmt_kl(0.00381) -> "0.0038"         fmt_latency(0.0123) -> "12.3 ms" fmt_delta(10, 12, "num") -> "+20.0%"
"""

from __future__ import annotations

import math

from compressor.measure.hardware import human_bytes

NA = "n/a"
KINDS = ("bytes", "pct", "rate", "kl", "num", "int", "latency", "duration")


def is_number(value: object) -> bool:
    """A number a reader can be shown and compare: int or float, not bool, not NaN or infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _not_a_number(value: object) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return NA


def fmt_bytes(n: object) -> str:
    """Binary units, labelled as such (KiB, MiB): the hardware module's formatter, so projections agree."""
    return human_bytes(n) if is_number(n) else _not_a_number(n)


def fmt_pct(x: object) -> str:
    """A fraction (0.8125) as a percentage ("81.2 %")."""
    return f"{100 * x:.1f} %" if is_number(x) else _not_a_number(x)


def fmt_rate(x: object) -> str:
    """Tokens per second: whole numbers from 100 up, one decimal below."""
    if not is_number(x):
        return _not_a_number(x)
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fmt_kl(x: object) -> str:
    """KL divergence in nats, four decimals (the demo model's int8 KL is ~0.0000, 4-bit ~0.002)."""
    return f"{x:.4f}" if is_number(x) else _not_a_number(x)


def fmt_num(x: object, digits: int = 2) -> str:
    """A plain figure such as perplexity."""
    return f"{x:.{digits}f}" if is_number(x) else _not_a_number(x)


def fmt_int(x: object) -> str:
    """A count with thousands separators (max context, max batch)."""
    return f"{int(x):,}" if is_number(x) else _not_a_number(x)


def fmt_latency(s: object) -> str:
    """A latency in seconds: milliseconds below one second (time to first token)."""
    if not is_number(s):
        return _not_a_number(s)
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_duration(s: object) -> str:
    """How long a phase of a run took, one decimal of a second."""
    return f"{s:.1f} s" if is_number(s) else _not_a_number(s)


_BY_KIND = {"bytes": fmt_bytes, "pct": fmt_pct, "rate": fmt_rate, "kl": fmt_kl, "num": fmt_num, "int": fmt_int,
            "latency": fmt_latency, "duration": fmt_duration}


def fmt(value: object, kind: str) -> str:
    """`value` formatted as one of KINDS."""
    if kind not in _BY_KIND:
        raise ValueError(f"kind={kind!r} is not a figure kind: use one of {', '.join(KINDS)}")
    return _BY_KIND[kind](value)


# --- comparisons --------------------------------------------------------------------------------


def fmt_delta(base: object, comp: object, kind: str) -> str:
    """Compressed against baseline: percentage points for a percentage (defined from a 0 % baseline
    too), a relative change otherwise; "" when either side is not a number or the baseline is 0."""
    if not (is_number(base) and is_number(comp)):
        return ""
    if kind == "pct":
        return f"{100 * (comp - base):+.1f} pts"
    return f"{(comp - base) / abs(base):+.1%}" if base else ""


def delta_tone(base: object, comp: object, higher_is_better: bool) -> str:
    """"good", "bad" or "neutral" (equal, or either side not a number): the colour of a change."""
    if not (is_number(base) and is_number(comp)) or abs(comp - base) <= 1e-12:
        return "neutral"
    return "good" if (comp > base) == higher_is_better else "bad"


def fmt_change(delta: object, kind: str) -> str:
    """A signed change already computed (a stage's share of a recipe's change): points for a
    percentage, four decimals for KL, two otherwise; "" when it is not a number."""
    if not is_number(delta):
        return ""
    if kind == "pct":
        return f"{100 * delta:+.1f} pts"
    return f"{delta:+.4f}" if kind == "kl" else f"{delta:+.2f}"


def fmt_interval(ci: object, kind: str = "pct") -> str:
    """A 95 % interval (low, high) as "[57.0, 93.4] %" for fractions, "[-16.4, +16.4] pts" for a paired
    difference of fractions (kind "pts"); "n/a" when it is missing or not two numbers."""
    if not (isinstance(ci, list | tuple) and len(ci) == 2 and all(is_number(v) for v in ci)):
        return NA
    lo, hi = ci
    if kind == "pts":
        return f"[{100 * lo:+.1f}, {100 * hi:+.1f}] pts"
    if kind == "pct":
        return f"[{100 * lo:.1f}, {100 * hi:.1f}] %"
    return f"[{fmt(lo, kind)}, {fmt(hi, kind)}]"
