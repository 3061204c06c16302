"""How much to evaluate: `EvalSettings`, every default resolved once, so the page, the CLI and a job
payload measure the same windows and problems for the same settings.

Named presets (PRESETS) set every value at once: "quick" (the default: a first full result in seconds
on a small model, one speed repeat, 40 problems), "standard" (the settings before presets) and
"thorough" (for reports: more tokens, problems and repeats). `EvalSettings.from_dict({"preset":
"thorough", "repeats": 7})` starts from a preset and changes what it names. `preset` is never set by
hand: it names the preset whose values these are, or "custom", so a report says what it measured.

    EvalSettings.named("thorough").arithmetic_samples   # 200
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from compressor.errors import LabError

CUSTOM = "custom"
# Every value of each preset. The perplexity window is the same in all three, so their perplexities
# compare; what changes is how many tokens, problems and timed repeats stand behind each figure.
PRESETS: dict[str, dict] = {
    "quick": {"ppl_tokens": 512, "context": 256, "stride": 128, "top_k": 32, "arithmetic_samples": 40,
              "max_new_tokens": 16, "speed_prompt_tokens": 64, "speed_new_tokens": 8, "speed_batch": 1,
              "repeats": 1, "online_extras": False, "attribute_stages": True},
    "standard": {"ppl_tokens": 2048, "context": 256, "stride": 128, "top_k": 32, "arithmetic_samples": 100,
                 "max_new_tokens": 24, "speed_prompt_tokens": 128, "speed_new_tokens": 16, "speed_batch": 8,
                 "repeats": 3, "online_extras": True, "attribute_stages": True},
    "thorough": {"ppl_tokens": 8192, "context": 256, "stride": 128, "top_k": 32, "arithmetic_samples": 200,
                 "max_new_tokens": 32, "speed_prompt_tokens": 256, "speed_new_tokens": 32, "speed_batch": 8,
                 "repeats": 5, "online_extras": True, "attribute_stages": True},
}
DEFAULT_PRESET = "quick"


@dataclass
class EvalSettings:
    """How much to evaluate. The defaults are the "quick" preset (PRESETS): a first full result in
    seconds on the demo model on 2 cores.

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
        preset: (derived, not an argument) the preset whose values these are, or "custom".
    """

    ppl_tokens: int = 512
    context: int = 256
    stride: int | None = None
    top_k: int = 32
    arithmetic_samples: int = 40
    max_new_tokens: int = 16
    speed_prompt_tokens: int = 64
    speed_new_tokens: int = 8
    speed_batch: int = 1
    repeats: int = 1
    online_extras: bool = False
    attribute_stages: bool = True
    preset: str = field(default=CUSTOM, init=False)

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
        values = self.values()
        self.preset = next((name for name, p in PRESETS.items() if p == values), CUSTOM)

    def values(self) -> dict:
        """The settings without the derived `preset` label."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def named(cls, preset: str, **changes) -> EvalSettings:
        """The settings of `preset` (PRESETS), with `changes`; LabError naming the presets otherwise."""
        if preset not in PRESETS:
            raise LabError(f"eval preset {str(preset)[:40]!r} is not known: use one of {', '.join(PRESETS)}.")
        return cls.from_dict({**PRESETS[preset], **changes})

    @classmethod
    def from_dict(cls, d: dict | None) -> EvalSettings:
        """Settings from a mapping; a "preset" key starts from that preset ("custom": from the defaults)
        and the other keys change it. Unknown keys are refused, naming the known ones."""
        d = dict(d or {})
        preset = d.pop("preset", None)
        known = sorted(f.name for f in fields(cls) if f.init)
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise LabError(f"unknown eval setting(s) {unknown}: known are {known} and 'preset'.")
        if preset is not None and preset != CUSTOM:
            if preset not in PRESETS:
                raise LabError(f"eval preset {str(preset)[:40]!r} is not known: use one of {', '.join(PRESETS)}.")
            base = dict(PRESETS[preset])
            if "context" in d and "stride" not in d:  # a new window gets its own default stride
                base.pop("stride")
            d = {**base, **d}
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
