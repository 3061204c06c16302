"""One model measured into the contract's `Measurement`: quality (perplexity, KL, top-1), arithmetic,
greedy samples and online extras, then speed, memory and KV bytes.

The sections are built here and only here from what compressor.measure returns. Quality is what does
not move with the machine's load, so a baseline's `QualityPart` can be cached; speed is always timed
again, baseline and compressed minutes apart in one process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from compressor.engine.kvcache import kv_cache_in_generate, model_kv_bytes_per_token
from compressor.engine.report import state_dict_bytes
from compressor.engine.text import leading_bos
from compressor.measure.arithmetic import evaluate_arithmetic, paired_diff_ci
from compressor.measure.evaldata import EvalData
from compressor.measure.generation import greedy_generate
from compressor.measure.online import online_extras
from compressor.measure.quality import Reference, evaluate_quality
from compressor.measure.settings import EvalSettings
from compressor.measure.speed import kv_bytes_per_token_from_config, measure_speed, weight_bytes
from compressor.runs.contract import Arithmetic, Measurement, Quality, Speed
from compressor.runs.record import Record

Emit = Callable[[float, str], None]  # (fraction of this model's measurement, message)


def _quiet(_fraction: float, _message: str) -> None:
    pass


@dataclass
class QualityPart(Record):
    """What `measure_quality` found: the part of a Measurement a baseline cache entry holds."""

    quality: Quality
    arithmetic: Arithmetic
    samples: list[str] = field(default_factory=list)  # one greedy answer per EvalData prompt
    online: dict = field(default_factory=dict)
    weight_bytes: int = 0  # measured after the first forwards, when kernels have adopted their layouts
    stored_bytes: int | None = None  # state-dict bytes: what the format stores (a saved model), runtime copies aside


def measure_quality(model, tokenizer, data: EvalData, settings: EvalSettings, reference: Reference | None = None,
                    emit: Emit = _quiet, online: bool = True, samples: bool = True) -> tuple[QualityPart, Reference]:
    """Perplexity (and KL/top-1 against `reference`), arithmetic, and unless switched off the greedy
    samples and online extras (`measure_samples`). Returns the part and this model's own Reference
    (the baseline's is the one others are compared with)."""
    t0 = time.perf_counter()
    emit(0.0, "perplexity and KL on held-out text")
    q, own = evaluate_quality(model, data.tokens, settings.context, settings.stride, settings.top_k, reference,
                              bos_id=leading_bos(tokenizer))
    # generation runs through the compressed KV cache when a KV stage configured one; the
    # perplexity windows above are single forwards, which a KV cache does not touch
    with _kv_generation(model):
        emit(0.3, "arithmetic exact match")
        arith = evaluate_arithmetic(model, tokenizer, data.problems)
    w_bytes = weight_bytes(model)
    quality = Quality(**q.to_dict(), reference_top_k=settings.top_k, reference_tail_mass=own.mean_tail_mass,
                      seconds=time.perf_counter() - t0)
    part = QualityPart(quality, Arithmetic.from_dict(arith), weight_bytes=w_bytes, stored_bytes=state_dict_bytes(model))
    if samples or online:
        part.samples, part.online = measure_samples(model, tokenizer, data, settings, emit, online=online,
                                                    samples=samples)
    return part, own


def measure_samples(model, tokenizer, data: EvalData, settings: EvalSettings, emit: Emit = _quiet,
                    online: bool = True, samples: bool = True) -> tuple[list[str], dict]:
    """Greedy answers to the sample prompts, and the online extras (WikiText-2, GSM8K, lm-eval) when
    the settings ask for them: the slowest figures to read, measured last."""
    answers: list[str] = []
    if samples and data.prompts:
        emit(0.55, "greedy samples")
        with _kv_generation(model):
            answers = greedy_generate(model, tokenizer, data.prompts, settings.max_new_tokens)
    return answers, online_extras(model, tokenizer, settings) if online else {}


def _kv_generation(model):
    return kv_cache_in_generate(model) if getattr(model, "kv_cache_config", None) else contextlib.nullcontext()


@dataclass
class SpeedPart:
    speed: Speed
    kv_bytes_per_token: float  # of the cache the speed run filled, else the config's
    kv_bytes_per_token_config: float


def measure_performance(model, settings: EvalSettings, emit: Emit = _quiet) -> SpeedPart:
    """Speed, peak memory, KV bytes and kernel paths. Never cached: on a shared machine they move
    with the load, so baseline and compressed are always timed minutes apart in one process."""
    emit(0.7, "speed and memory")
    t0 = time.perf_counter()
    raw = measure_speed(model, model.config.vocab_size, settings.speed_prompt_tokens, settings.speed_new_tokens,
                        batches=tuple(sorted({1, settings.speed_batch})), repeats=settings.repeats)
    kv_config = kv_bytes_per_token_from_config(model.config, next(model.parameters()).dtype)
    speed = Speed.from_dict(raw | {"seconds": time.perf_counter() - t0})  # kernel paths: those the run took
    emit(1.0, "done")
    return SpeedPart(speed, raw["kv_bytes_per_token_measured"] or kv_config, kv_config)


def measurement(part: QualityPart, perf: SpeedPart | None, model=None, kv_context: int | None = None,
                baseline: Measurement | None = None) -> Measurement:
    """The Measurement of one model (its speed sections None while `perf` is not measured yet). For a
    compressed model (`baseline` given): the paired interval on arithmetic, and, when a KV stage
    compressed its cache, its bytes per token at `kv_context`."""
    m = Measurement(weight_bytes=part.weight_bytes, stored_bytes=part.stored_bytes, quality=part.quality,
                    arithmetic=part.arithmetic, online=part.online)
    if perf is not None:
        m.speed, m.kv_bytes_per_token = perf.speed, perf.kv_bytes_per_token
        m.kv_bytes_per_token_config = perf.kv_bytes_per_token_config
    if perf is not None and model is not None and getattr(model, "kv_cache_config", None) is not None and kv_context:
        # A compressed cache's bytes per token depend on the length: KIVI keeps a recent window in fp16,
        # StreamingLLM evicts only past sinks + window. The speed run stops at a few hundred tokens, so
        # fill a real cache layer to the projection's context instead and report that figure.
        m.kv_bytes_per_token_speed_run = m.kv_bytes_per_token
        m.kv_bytes_per_token = model_kv_bytes_per_token(model, model.kv_cache_config, context=kv_context)
        m.kv_bytes_context = kv_context
    if baseline is not None and baseline.arithmetic is not None:
        m.arithmetic_diff_ci95 = paired_diff_ci(baseline.arithmetic.correct, part.arithmetic.correct)
    return m


def quality_summary(m: Measurement | QualityPart) -> dict:
    """The per-stage quality keys (contract.QUALITY_KEYS) of a measured model."""
    q, a = m.quality, m.arithmetic
    return {"perplexity": q.perplexity if q else None, "kld": q.kld if q else None,
            "top1_agreement": q.top1_agreement if q else None, "arithmetic_accuracy": a.accuracy if a else None}


def stage_quality(model, tokenizer, data: EvalData, settings: EvalSettings, reference: Reference) -> dict:
    """Perplexity, KL and top-1 against the baseline, and arithmetic exact match, of an intermediate model:
    `measure_quality` on the same tokens, windows and problems as the final evaluation (so the last
    stage's numbers and the compressed column agree), without greedy samples or online extras."""
    part, _ = measure_quality(model, tokenizer, EvalData(data.tokens, data.problems, []), settings,
                              reference=reference, online=False)
    return quality_summary(part) | {"seconds": part.quality.seconds}
