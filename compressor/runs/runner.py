"""One run: check, load, measure the baseline, compress, measure again (streaming), project onto hardware.

    report = run(RunRequest.from_dict({"model": "demo", "recipe": "w4-g128", "hardware": "t4"}))

`run_job(payload, ctx)` is the same for the background worker (the job target
"compressor.runs.runner:run_job"): the payload is a RunRequest's JSON, the result `Report.to_dict()`,
and partial reports go to `ctx.partial` as the compressed model's figures arrive (quality, then speed;
samples and the projection complete the report). Before any weight loads, `preflight` checks the
model's config and the recipe against its shapes. Baseline and compressed models are measured the
same way on the same tokens (compressor/runs/measure_model.py); the baseline's quality (its top-k
reference for KL included) is cached through `cache`, keyed by compressor/runs/fingerprint.py, so a
second recipe on the same model skips it (`report.timings.baseline_cached` says so). Speed and memory
are measured again every time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from compressor.errors import LabError, ModelLoadError
from compressor.measure import hardware as hw
from compressor.measure.evaldata import load_eval_data
from compressor.measure.generation import check_positions
from compressor.measure.quality import Reference
from compressor.progress import Progress
from compressor.runs import fingerprint as fp
from compressor.runs import limits
from compressor.runs.contract import ModelInfo, Report, RunRequest, Sample, Timings
from compressor.runs.footprint import float16_weight_bytes, footprint
from compressor.runs.measure_model import (
    QualityPart,
    measure_performance,
    measure_quality,
    measure_samples,
    measurement,
    quality_summary,
    stage_quality,
)
from compressor.runs.projection import project_report

# Fraction of the whole run each phase covers, for progress events.
PHASES = {"load": (0.0, 0.05), "evaluate-baseline": (0.05, 0.3), "compress": (0.3, 0.65),
          "evaluate-compressed": (0.65, 0.95), "project": (0.95, 1.0)}
# The compressed model's figures in the order they reach the page: (section, share of its phase).
STREAM = {"quality": (0.0, 0.4), "speed": (0.4, 0.7), "samples": (0.7, 1.0)}
PENDING_AFTER = {"quality": ["speed", "samples", "projection"], "speed": ["samples", "projection"]}
TARGET = "compressor.runs.runner:run_job"  # what a JobManager runs


class _Phases:
    """Maps a phase's own 0..1 progress onto the run's fraction and forwards Progress events."""

    def __init__(self, progress: Callable[[Progress], None] | None):
        self.progress = progress

    def emit(self, phase: str, within: float = 0.0, message: str = "") -> None:
        if self.progress is not None:
            lo, hi = PHASES[phase]
            self.progress(Progress(stage=phase, fraction=lo + (hi - lo) * min(max(within, 0.0), 1.0), message=message))

    def within(self, phase: str, lo: float = 0.0, hi: float = 1.0) -> Callable[[float, str], None]:
        return lambda fraction, message: self.emit(phase, lo + (hi - lo) * fraction, message)

    def engine_callback(self) -> Callable[[Progress], None]:
        def forward(p: Progress) -> None:
            if self.progress is not None:
                lo, hi = PHASES["compress"]
                self.progress(dataclasses.replace(p, fraction=lo + (hi - lo) * p.fraction, eta_s=None))
        return forward


def check_request(request: RunRequest) -> RunRequest:
    """`request` unless a bound of compressor/runs/limits.py or the hardware id refuses it (LabError
    naming the limit or the known ids): milliseconds, no model file read. Config-only checks against
    the model are `preflight`'s."""
    limits.check_model_spec(request.model)
    limits.check_projection(request.projection_context, request.projection_batch)
    if request.hardware != hw.THIS_MACHINE:
        hw.get_profile(limits.check_hardware_id(request.hardware))  # "this-machine" is probed when projecting
    return request


def check_payload(payload: dict) -> RunRequest:
    """A job payload read as a RunRequest and checked (`check_request`; LabError otherwise): what a
    JobManager's `check_payload` runs before storing a submission."""
    return check_request(RunRequest.from_dict(payload))


def run(request: RunRequest, *, cache=None, progress: Callable[[Progress], None] | None = None,
        log: Callable[[str], None] | None = None, save_dir: str | Path | None = None,
        partial: Callable[[Report], None] | None = None) -> Report:
    """Load `request.model`, measure it, compress it with `request.recipe`, measure again, project.

    Everything that can be checked before work is checked first: the hardware id, then the model's
    config and the recipe against its shapes on the meta device (`compressor.models.preflight`), then
    lengths against the model's positions, all before any weight is loaded or measured; each problem
    is a LabError naming the fix. `cache` is anything with get(key) -> dict | None and put(key, dict)
    (a JobContext's cache). With `save_dir`, the compressed model is saved there (`load_model(folder)`).
    `partial(report)` receives the report as its figures arrive: the compressed model's quality, then
    its speed and memory (`report.pending` names what is still to come); samples and the hardware
    projection complete the report that `run` returns.
    """
    from compressor.engine.compress import compress
    from compressor.models.loading import load_model

    log = log or (lambda _: None)
    t_start = time.perf_counter()
    phases = _Phases(progress)
    settings = request.eval
    check_request(request)  # the CLI's request too: the same bounds as a job payload's

    phases.emit("load", 0.0, f"checking {request.model} and the recipe (config only)")
    t0 = time.perf_counter()
    pre = _preflight(request)
    preflight_s = time.perf_counter() - t0
    for warning in pre.warnings:
        log(f"note: {warning}")
    phases.emit("load", 0.2, f"loading {request.model}")
    t0 = time.perf_counter()
    net, tokenizer = load_model(request.model, allow_pickle=request.allow_pickle,
                                trust_remote_code=request.trust_remote_code, device=request.device, log=log)
    load_s = time.perf_counter() - t0
    env = fp.environment(request.device)
    fingerprint = fp.model_fingerprint(net, request.model)
    n_params = sum(p.numel() for p in net.parameters())  # logical count, before compression
    data = load_eval_data(tokenizer, settings)
    check_positions(net, tokenizer, settings, data.tokens.numel(), data.prompts)
    # what a 16-bit profile would hold of the baseline: counted now, before compression changes `net`
    base_bytes16, base_float_bytes = float16_weight_bytes(net), next(net.parameters()).element_size()

    if cache is not None and not fingerprint["identified"]:
        log(f"{request.model}: no local files or hub revision identify these weights; the baseline is measured again")
        cache = None
    key = fp.baseline_cache_key(fingerprint, settings, env, fp.eval_data_digest(data.tokens, data.problems,
                                                                                 data.prompts))
    cached = cache.get(key) if cache is not None else None
    t0 = time.perf_counter()
    if cached is not None:
        log("baseline quality from cache (speed and memory are measured again)")
        base_part, reference = QualityPart.from_dict(cached["part"]), Reference.from_dict(cached["reference"])
    else:
        base_part, reference = measure_quality(net, tokenizer, data, settings,
                                               emit=phases.within("evaluate-baseline"))
        if cache is not None:
            cache.put(key, {"part": base_part.to_dict(), "reference": reference.to_dict(), "measured_at": time.time()})
    baseline = measurement(base_part, measure_performance(net, settings, phases.within("evaluate-baseline")))
    baseline_s = time.perf_counter() - t0

    phases.emit("compress", 0.0, "compressing")
    t0 = time.perf_counter()
    after_stage = None
    if settings.attribute_stages and len(request.recipe.stages) > 1:
        last = len(request.recipe.stages) - 1  # the last stage's model is the compressed model, measured below

        def after_stage(index: int, model) -> dict:
            return {} if index == last else stage_quality(model, tokenizer, data, settings, reference)

    net, creport = compress(net, request.recipe, progress=phases.engine_callback(), tokenizer=tokenizer,
                            after_stage=after_stage)
    compress_s = time.perf_counter() - t0  # includes the per-stage quality checks (timings: stage_eval_s)
    log(f"compressed in {compress_s:.1f} s")
    if save_dir is not None:
        _save(net, tokenizer, save_dir, log)

    # The compressed model's figures, streamed as they exist: quality, then speed, then samples.
    t0 = time.perf_counter()
    kv_context = min(request.projection_context, getattr(net.config, "max_position_embeddings", 2048))
    comp_part, _ = measure_quality(net, tokenizer, data, settings, reference=reference, online=False, samples=False,
                                   emit=phases.within("evaluate-compressed", *STREAM["quality"]))
    report = Report(
        request=request,
        model=ModelInfo(spec=request.model, n_params=n_params, architecture=type(net).__name__,
                        fingerprint=fp.public_fingerprint(fingerprint), source=pre.source),
        baseline=baseline, compressed=measurement(comp_part, None, baseline=baseline), compression=creport,
        environment=env, warnings=list(dict.fromkeys([*pre.warnings, *creport.warnings])))
    timings = dict(preflight_s=preflight_s, load_s=load_s, baseline_eval_s=baseline_s, baseline_cached=cached is not None,
                   baseline_cached_at=(cached or {}).get("measured_at"), compress_s=compress_s,
                   stage_eval_s=sum(s.quality.get("seconds", 0.0) for s in creport.stages))
    _send(partial, report, "quality", Timings(**timings, total_s=time.perf_counter() - t_start))

    perf = measure_performance(net, settings, phases.within("evaluate-compressed", *STREAM["speed"]))
    report.compressed = measurement(comp_part, perf, model=net, kv_context=kv_context, baseline=baseline)
    report.footprint = footprint(net, n_params, request.recipe, baseline, report.compressed, base_bytes16,
                                 base_float_bytes)
    _send(partial, report, "speed", Timings(**timings, total_s=time.perf_counter() - t_start))

    comp_part.samples, comp_part.online = measure_samples(
        net, tokenizer, data, settings, phases.within("evaluate-compressed", *STREAM["samples"]))
    report.compressed.online = comp_part.online
    expected = data.expected or [None] * len(data.prompts)
    report.samples = [Sample(p, b, c, e) for p, b, c, e in zip(data.prompts, base_part.samples, comp_part.samples,
                                                               expected, strict=True)]
    if after_stage is not None:
        creport.stages[-1].quality = quality_summary(report.compressed)
    compressed_s = time.perf_counter() - t0
    # last: "this-machine" probes the machine once per process (seconds), which no figure above waits for
    phases.emit("project", 0.0, "projecting onto hardware")
    t0 = time.perf_counter()
    report.projection = project_report(report, request.hardware, request.projection_context,
                                       request.projection_batch)
    report.timings = Timings(**timings, compressed_eval_s=compressed_s, project_s=time.perf_counter() - t0,
                             total_s=time.perf_counter() - t_start)
    phases.emit("project", 1.0, "done")
    return report


def _preflight(request: RunRequest):
    """`compressor.models.preflight` on the request. What it raises beyond LabError comes from reading
    the model's own files (a config.json that is not JSON, or a list): bad input, said as such."""
    from compressor.models.preflight import preflight

    try:
        return preflight(request.model, request.recipe, allow_pickle=request.allow_pickle,
                         trust_remote_code=request.trust_remote_code)
    except LabError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, OSError) as e:
        raise ModelLoadError(f"model {request.model!r}: its config cannot be read ({type(e).__name__}: "
                             f"{str(e)[:200]}); config.json must be a JSON mapping as save_pretrained() writes it"
                             ) from None


def _send(partial: Callable[[Report], None] | None, report: Report, section: str, timings: Timings) -> None:
    """Hands a partial report to `partial` (nothing when nobody listens)."""
    if partial is not None:
        partial(dataclasses.replace(report, pending=list(PENDING_AFTER[section]), timings=timings))


def _save(net, tokenizer, save_dir: str | Path, log: Callable[[str], None]) -> None:
    from compressor.engine.serialize import save_compressed, unsaveable_modules

    blocked = unsaveable_modules(net)
    if blocked:  # a folder that cannot load back would be offered for download and to the prompt box
        log(f"the compressed model is not saved: {len(blocked)} module(s) ({blocked[0]}, ...) are of a type "
            "the lab cannot save (bitsandbytes); the prompt box compresses again from the recipe")
    else:
        save_compressed(net, tokenizer, save_dir)
        log("compressed model saved for download")


def run_job(payload: dict, ctx) -> dict:
    """The background worker's target: a RunRequest's JSON -> `Report.to_dict()`, also written to
    `ctx.artifact_dir`/report.json beside the saved compressed model."""
    request = RunRequest.from_dict(payload)
    artifact_dir = getattr(ctx, "artifact_dir", None)
    partial = (lambda r: ctx.partial(r.to_dict())) if getattr(ctx, "wants_partial", False) else None
    report = run(request, cache=ctx.cache, progress=ctx.progress, log=ctx.log, save_dir=artifact_dir,
                 partial=partial).to_dict()
    if artifact_dir is not None:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "report.json").write_text(json.dumps(report, indent=2))
    return report
