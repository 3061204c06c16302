"""Number inputs that answer bad values with a sentence naming the field and its range.

Gradio's own Slider and Number fail on a value that is not a number (a script sending "abc") with a
bare "Error", and name neither the field nor the fix when a value is out of range. `checked(widget)`
checks the value first and raises `gr.Error` (which Gradio passes on as it is). The widget's own
`preprocess` is wrapped on the instance: a subclass would make Gradio write a .pyi stub beside this file.
"""

from __future__ import annotations

import math

import gradio as gr


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def check_number(label: str, value: object, lo: float | None, hi: float | None) -> None:
    """gr.Error naming `label` when `value` is not a finite number within [lo, hi]."""
    rng = f"use {_num(lo)} to {_num(hi)}" if lo is not None and hi is not None else "use a number"
    if value is None:
        raise gr.Error(f"{label} is empty: {rng}", print_exception=False)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise gr.Error(f"{label} = {str(value)[:40]!r} is not a number: {rng}", print_exception=False)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise gr.Error(f"{label} = {_num(value)} is out of range: {rng}", print_exception=False)


def checked(widget: gr.Slider | gr.Number) -> gr.Slider | gr.Number:
    """`widget`, whose values are checked before Gradio converts them."""
    convert = widget.preprocess

    def preprocess(payload):
        check_number(widget.label or "a number", payload, widget.minimum, widget.maximum)
        return convert(payload)

    widget.preprocess = preprocess
    return widget
