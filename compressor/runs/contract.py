"""The run contract: what a run is asked to do (`RunRequest`) and what it found (`Report`).

Every side of a run speaks these types: the CLI and the page build a RunRequest, the worker receives
it as JSON (`to_dict`) and rebuilds it (`from_dict`), the runner returns a Report, the store keeps
`Report.to_dict()`, and the page and the CLI read the Report's attributes. JSON written by older
code goes through `upgrade` (the one place that knows old shapes) inside `Report.from_dict`.

    request = RunRequest.from_dict({"model": "demo", "recipe": "w4-g128", "hardware": "t4"})
    report = run(request)                         # compressor.runs.runner
    report.compressed.decode_tokens_per_s, report.compressed.quality.kld, report.projection.compressed.fits
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from compressor.engine.recipe import Recipe, load_recipe
from compressor.engine.report import CompressionReport
from compressor.errors import LabError
from compressor.measure.hardware import THIS_MACHINE, HardwareProfile, ModelFacts
from compressor.measure.settings import EvalSettings
from compressor.runs.record import Record, to_json  # noqa: F401  (to_json: re-exported with the types)

SCHEMA_VERSION = 2  # 1: the untyped report dict before the contract (no "schema_version" key)
PROJECTION_CONTEXT = 2048


# --- the request ------------------------------------------------------------------------------


@dataclass
class RunRequest(Record):
    """One run: compress `model` with `recipe`, measure both, project onto `hardware`.

    Args:
        model: "demo", a local folder or .gguf file (under the allowed folders), or a hub id.
        recipe: the Recipe; `from_dict` also takes a preset name, YAML/JSON text, a dict or a list.
        hardware: a profile id (`python -m compressor hardware`) or "this-machine".
        eval: evaluation settings, every default resolved (EvalSettings).
        projection_context, projection_batch: where the hardware projection is made.
        device: "cpu" or "cuda[:i]".
        allow_pickle, trust_remote_code: loading opt-ins; JSON booleans only.
    """

    model: str
    recipe: Recipe
    hardware: str = THIS_MACHINE
    eval: EvalSettings = field(default_factory=EvalSettings)
    projection_context: int = PROJECTION_CONTEXT
    projection_batch: int = 1
    device: str = "cpu"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("model", "hardware", "device"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise LabError(f"request '{name}'={value!r} must be a non-empty string, e.g. "
                               f"{ {'model': 'demo', 'hardware': THIS_MACHINE, 'device': 'cpu'}[name]!r}.")
            setattr(self, name, value.strip())
        if not isinstance(self.recipe, Recipe):
            self.recipe = load_recipe(self.recipe, files=False)  # a request never reads server files
        if not isinstance(self.eval, EvalSettings):
            if self.eval is not None and not isinstance(self.eval, dict):
                raise LabError(f"request 'eval'={self.eval!r} must be a mapping of eval settings, "
                               "e.g. {\"ppl_tokens\": 512}.")
            self.eval = EvalSettings.from_dict(self.eval)
        for name in ("allow_pickle", "trust_remote_code"):  # bool("false") is True: JSON booleans only
            if not isinstance(getattr(self, name), bool):
                raise LabError(f"request '{name}'={getattr(self, name)!r} must be true or false "
                               "(a JSON boolean, not a string or number).")
        for name in ("projection_context", "projection_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LabError(f"request '{name}'={value!r} must be a positive integer, e.g. "
                               f"{PROJECTION_CONTEXT if name == 'projection_context' else 1}.")

    @classmethod
    def from_dict(cls, d: dict) -> RunRequest:
        """A request from JSON (a job payload); older payloads' short names (samples, context,
        max_new_tokens at the top level) are read too. Unknown keys are refused, naming the known ones."""
        if not isinstance(d, dict):
            raise LabError(f"a run request must be a mapping, got {type(d).__name__}")
        d = dict(d)
        evald = d.get("eval") or {}
        if not isinstance(evald, dict):
            raise LabError(f"request 'eval'={evald!r} must be a mapping of eval settings, "
                           "e.g. {\"ppl_tokens\": 512}.")
        evald = dict(evald)
        for short, name in _PAYLOAD_ALIASES.items():
            if d.get(short) is not None:
                evald[name] = d.pop(short)
            d.pop(short, None)
        d["eval"] = evald
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LabError(f"unknown request key(s) {unknown}: known are {sorted(known)}.")
        if d.get("model") in (None, "") or d.get("recipe") in (None, ""):
            raise LabError("a run request needs 'model' (e.g. 'demo') and 'recipe' (a preset name, YAML or a mapping).")
        if not isinstance(d["recipe"], str | dict | list | Recipe):
            raise LabError(f"request 'recipe'={d['recipe']!r} must be a preset name, YAML/JSON text, a mapping or a "
                           "list of stages.")
        version = d.pop("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise LabError(f"request 'schema_version'={version!r} is not one this lab reads (1 to {SCHEMA_VERSION}): "
                           "leave it out, or update the lab")
        return cls(**d)


# Short names job payloads used for the most common eval settings (schema 1).
_PAYLOAD_ALIASES = {"samples": "arithmetic_samples", "context": "context", "max_new_tokens": "max_new_tokens"}


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Stat(Record):
    """Median, minimum and maximum of `n` timed repeats."""

    median: float
    min: float
    max: float
    n: int


@dataclass
class BatchSpeed(Record):
    """One batch size's figures; a figure an older report did not keep is None."""

    prefill_tokens_per_s: Stat | None
    decode_tokens_per_s: Stat | None
    time_to_first_token_s: Stat | None


@dataclass
class Speed(Record):
    """Timed prefill and greedy decode at each batch size (random prompts), peak memory, KV bytes."""

    prompt_tokens: int
    new_tokens: int
    repeats: int
    by_batch: dict[str, BatchSpeed]
    peak_memory_bytes: int | None = None
    peak_memory_delta_bytes: int | None = None
    kv_bytes_per_token_measured: float | None = None
    kernel_paths: dict[str, int] = field(default_factory=dict)
    memory_method: str | None = None  # how peak memory was read (CUDA allocator, process RSS peak)
    seconds: float | None = None
    decode_threads: int | None = None  # threads batch-1 decode ran on (CPU: 1); None in older reports

    @property
    def batch1(self) -> BatchSpeed | None:
        return self.by_batch.get("1")

    def median(self, figure: str) -> float | None:
        """The batch-1 median of `figure` ("decode_tokens_per_s", ...), None when not measured."""
        stat = getattr(self.batch1, figure, None)
        return stat.median if stat is not None else None


@dataclass
class Quality(Record):
    """Sliding-window perplexity on held-out text and, for the compressed model, KL to the baseline
    (top-k + tail bucket, a lower bound) and top-1 agreement on the same tokens."""

    perplexity: float
    nll: float
    n_tokens: int
    context: int
    stride: int
    kld: float | None = None
    kld_p99: float | None = None
    top1_agreement: float | None = None
    reference_top_k: int | None = None
    reference_tail_mass: float | None = None
    seconds: float | None = None


@dataclass
class KindScore(Record):
    accuracy: float
    n: int


@dataclass
class ArithmeticExample(Record):
    prompt: str
    answer: str
    output: str


@dataclass
class Arithmetic(Record):
    """Greedy exact match on arithmetic problems; `correct` per problem (for paired intervals)."""

    accuracy: float | None
    n: int
    ci95: tuple[float, float] | None = None
    correct: list[int] = field(default_factory=list)
    by_kind: dict[str, KindScore] = field(default_factory=dict)
    examples: list[ArithmeticExample] = field(default_factory=list)
    max_tokens: int | None = None  # longest prompt + new tokens: the most a KV cache held while scoring


@dataclass
class Measurement(Record):
    """One model (baseline or compressed) measured on this machine. Sections are None until measured
    (a report streamed while its run goes on), or when the settings skip them."""

    weight_bytes: int | None  # held while running here (kernels' runtime layouts included); None in old reports
    quality: Quality | None = None
    arithmetic: Arithmetic | None = None
    speed: Speed | None = None
    kv_bytes_per_token: float | None = None  # the headline: a compressed cache at `kv_bytes_context`
    kv_bytes_per_token_config: float | None = None  # from the config, at the model's float width
    kv_bytes_per_token_speed_run: float | None = None  # a compressed cache after the short speed run
    kv_bytes_context: int | None = None
    arithmetic_diff_ci95: tuple[float, float] | None = None  # compressed - baseline, paired (Newcombe)
    online: dict = field(default_factory=dict)
    stored_bytes: int | None = None  # state-dict bytes: what a saved model stores; None in older reports

    # the headline figures, for the page and the CLI
    @property
    def perplexity(self) -> float | None:
        return self.quality.perplexity if self.quality else None

    @property
    def kld(self) -> float | None:
        return self.quality.kld if self.quality else None

    @property
    def top1_agreement(self) -> float | None:
        return self.quality.top1_agreement if self.quality else None

    @property
    def arithmetic_accuracy(self) -> float | None:
        return self.arithmetic.accuracy if self.arithmetic else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.speed.median("decode_tokens_per_s") if self.speed else None

    @property
    def prefill_tokens_per_s(self) -> float | None:
        return self.speed.median("prefill_tokens_per_s") if self.speed else None

    @property
    def time_to_first_token_s(self) -> float | None:
        return self.speed.median("time_to_first_token_s") if self.speed else None

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.speed.peak_memory_bytes if self.speed else None

    @property
    def kernel_paths(self) -> dict[str, int]:
        return self.speed.kernel_paths if self.speed else {}


@dataclass
class Sample(Record):
    """One prompt answered greedily by both models; `expected` when the answer is known (arithmetic)."""

    prompt: str
    baseline: str
    compressed: str
    expected: str | None = None


# --- projection -------------------------------------------------------------------------------


@dataclass
class Footprint(Record):
    """What a projection needs of one model, measured once so any profile can be projected later
    without the model: its facts as measured here and with floats at 16 bits (as a GPU holds them)."""

    measured: ModelFacts
    float16: ModelFacts
    measured_dtype: str


@dataclass
class ProjectedSide(Record):
    """Fit, capacity and speed of one model on a hardware profile: a roofline projection."""

    fits: bool
    memory_needed_bytes: int
    memory_usable_bytes: int
    max_context_at_batch_1: int
    max_batch_at_context: int
    decode_tokens_per_s: float
    decode_tokens_per_s_large_batch: float
    large_batch: int
    prefill_tokens_per_s: float
    time_to_first_token_s: float
    prompt_tokens: int
    decode_bound: str
    decode_breakdown_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    label: str = "projection"


@dataclass
class MeasuredCheck(Record):
    projected_decode_tokens_per_s: float
    measured_decode_tokens_per_s: float | None

    @property
    def ratio(self) -> float | None:
        m = self.measured_decode_tokens_per_s
        return self.projected_decode_tokens_per_s / m if m else None


@dataclass
class Projection(Record):
    """Both models projected onto one hardware profile at (context, batch). Not a measurement."""

    hardware: HardwareProfile
    context: int
    batch: int
    baseline: ProjectedSide
    compressed: ProjectedSide
    float_dtype: str  # what the floats were counted as: "float16 (projected)" or "float32 (as measured)"
    context_clamped_from: int | None = None
    check_against_measured: dict[str, MeasuredCheck] | None = None  # "this machine" only
    label: str = "projection"

    @property
    def warnings(self) -> list[str]:
        return list(dict.fromkeys(self.baseline.warnings + self.compressed.warnings))


# --- the report -------------------------------------------------------------------------------


@dataclass
class ModelInfo(Record):
    spec: str
    n_params: int
    architecture: str
    fingerprint: dict = field(default_factory=dict)  # which weights: file digests or hub revision
    source: str | None = None  # e.g. "GGUF Q4_1, dequantized" when the weights came from a GGUF file


@dataclass
class Environment(Record):
    device: str
    python: str
    torch: str
    transformers: str
    platform: str
    cpu: str
    threads: int
    gpu: str | None = None


@dataclass
class Timings(Record):
    preflight_s: float | None = None  # config and recipe checked before any weight loads
    load_s: float | None = None
    baseline_eval_s: float | None = None
    baseline_cached: bool = False  # the baseline's quality came from the cache (speed is always measured)
    baseline_cached_at: float | None = None  # when that cached baseline was measured (time.time())
    compress_s: float | None = None
    stage_eval_s: float | None = None
    compressed_eval_s: float | None = None
    project_s: float | None = None  # the hardware projection ("this-machine": the probe, once per process)
    total_s: float | None = None


QUALITY_KEYS = ("perplexity", "kld", "top1_agreement", "arithmetic_accuracy")


@dataclass
class StageAttribution(Record):
    """A stacked recipe's quality after stage `index` and the change that stage caused."""

    index: int
    method: str
    kind: str
    after: dict[str, float | None]
    delta: dict[str, float | None]
    note: str | None = None


@dataclass
class Report(Record):
    """Everything one run measured and projected. Stages and per-module rows live once, in
    `compression`; `attribution` is derived from them."""

    request: RunRequest
    model: ModelInfo
    baseline: Measurement
    compressed: Measurement
    compression: CompressionReport
    samples: list[Sample] = field(default_factory=list)
    footprint: dict[str, Footprint] = field(default_factory=dict)  # "baseline", "compressed"
    projection: Projection | None = None
    environment: Environment | None = None
    timings: Timings = field(default_factory=Timings)
    warnings: list[str] = field(default_factory=list)
    # Sections still being measured in a report streamed while its run goes on ("speed", "projection",
    # "samples"); empty in a finished report.
    pending: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        from compressor.runs.upgrade import upgrade

        return super().from_dict(upgrade(d))

    @property
    def attribution(self) -> list[StageAttribution]:
        """Per-stage quality of a stacked recipe (empty for one stage): the deltas of all rows sum to
        the whole recipe's change. The baseline is stage -1 (KL 0, top-1 agreement 1)."""
        stages = self.compression.stages
        if len(stages) < 2 or not any(s.quality for s in stages):
            return []
        prev = {"perplexity": self.baseline.perplexity, "kld": 0.0, "top1_agreement": 1.0,
                "arithmetic_accuracy": self.baseline.arithmetic_accuracy}
        rows = []
        for s in stages:
            after = {k: s.quality.get(k) for k in QUALITY_KEYS}
            delta = {k: after[k] - prev[k] if _number(after[k]) and _number(prev[k]) else None for k in QUALITY_KEYS}
            note = ("a KV-cache stage changes generation only: perplexity windows run without a cache, arithmetic "
                    "exact match is where it shows") if s.kind == "kv" else None
            rows.append(StageAttribution(s.index, s.method, s.kind, after, delta, note))
            prev = after
        return rows


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
