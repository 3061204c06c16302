"""How much to evaluate: `EvalSettings`, every default resolved once, so the page, the CLI and a job
payload measure the same windows and problems for the same settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from compressor.errors import LabError


@dataclass
class EvalSettings:
    """How much to evaluate. Defaults keep an RTN run on the demo model well under a minute on 2 cores.

    Args:
        ppl_tokens: tokens of held-out text scored for perplexity and KL.
        context: sliding-window length (tokens of context per forward).
        stride: window advance; tokens scored per window after the first. Default (None): half the
            context, at least 8; resolved here once, so every entry point measures the same windows.
        top_k: baseline log-probs kept per token for KL (plus one tail bucket).
        arithmetic_samples: arithmetic problems (exact match, greedy).
        max_new_tokens: tokens generated for each side-by-side sample prompt.
        speed_prompt_tokens: prompt length for prefill timing.
        speed_new_tokens: decode steps timed per repeat.
        speed_batch: the larger batch for prefill/decode timing (batch 1 is always measured).
        repeats: timed repeats (median, min, max reported) after one warm-up.
        online_extras: try WikiText-2 / GSM8K / lm-eval when libraries and the hub are available.
        attribute_stages: with a recipe of several stages, also measure perplexity, KL and
            arithmetic after each stage but the last, so the report attributes the quality change to
            each stage (one extra quality evaluation per stage, no speed runs).
    """

    ppl_tokens: int = 2048
    context: int = 256
    stride: int | None = None
    top_k: int = 32
    arithmetic_samples: int = 100
    max_new_tokens: int = 24
    speed_prompt_tokens: int = 128
    speed_new_tokens: int = 16
    speed_batch: int = 8
    repeats: int = 3
    online_extras: bool = True
    attribute_stages: bool = True

    # (min, max) accepted for each integer setting: large enough to mean something, small enough
    # that one run cannot occupy a shared 2-core machine for an hour.
    BOUNDS = {
        "ppl_tokens": (128, 65536), "context": (16, 8192), "stride": (8, 8192), "top_k": (1, 256),
        "arithmetic_samples": (0, 800), "max_new_tokens": (1, 256), "speed_prompt_tokens": (8, 4096),
        "speed_new_tokens": (2, 256), "speed_batch": (1, 64), "repeats": (1, 20),
    }

    def __post_init__(self):
        if self.stride is None and isinstance(self.context, int) and not isinstance(self.context, bool):
            self.stride = max(8, self.context // 2)
        for name, (lo, hi) in self.BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise LabError(f"eval setting {name}={value!r} is not valid: use an integer in [{lo}, {hi}].")
        for name in ("online_extras", "attribute_stages"):
            if not isinstance(getattr(self, name), bool):
                raise LabError(f"eval setting {name}={getattr(self, name)!r} is not valid: use true or false.")
        if self.stride > self.context:
            raise LabError(f"eval setting stride={self.stride} is larger than context={self.context}: "
                           "use a stride <= context (half the context is usual).")

    @classmethod
    def from_dict(cls, d: dict | None) -> EvalSettings:
        d = dict(d or {})
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise LabError(f"unknown eval setting(s) {unknown}: known are {sorted(cls.__dataclass_fields__)}.")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
