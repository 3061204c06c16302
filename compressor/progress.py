"""Progress events: a plain dataclass passed to a plain callback (no UI types here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Progress:
    stage: str  # e.g. "calibrate", "gptq", "evaluate-baseline"
    fraction: float  # overall progress of the whole job, 0..1
    message: str = ""
    stage_index: int = 0
    n_stages: int = 1
    layer: int | None = None  # 1-based decoder layer within the stage, when there is one
    n_layers: int | None = None
    eta_s: float | None = None  # seconds left for the whole job, None when unknown
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[Progress], None]


def null_progress(_: Progress) -> None:
    return None


class EtaClock:
    """Estimates time left from the fraction done so far (linear in work units)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def eta(self, fraction: float) -> float | None:
        if fraction <= 0.0:
            return None
        elapsed = time.perf_counter() - self.t0
        return max(0.0, elapsed * (1.0 - fraction) / fraction)
