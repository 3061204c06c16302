"""Autotune mode for the Triton kernels, read at launch time so it changes without reloading modules."""

from __future__ import annotations

import os

AUTOTUNE_ENV = "KERNELS_AUTOTUNE"
MODES = ("small", "full")


def autotune_mode(requested: str | None = None) -> str:
    """"small" (one config: tests, first runs) or "full" (benchmarks); argument first, then $KERNELS_AUTOTUNE."""
    mode = requested or os.environ.get(AUTOTUNE_ENV, "small")
    if mode not in MODES:
        raise ValueError(f"autotune mode {mode!r} is unknown: use one of {MODES} (argument or ${AUTOTUNE_ENV})")
    return mode


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
