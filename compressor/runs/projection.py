"""A finished report projected onto a hardware profile, from `report.footprint` alone (no model).

The runner makes a run's own projection with it, and the page re-projects a stored report onto
another profile, context or batch at once:

    projection = project_report(report, "h100", context=4096, batch=8)

Profiles that hold floats in 16 bits (GPUs, Apple chips) are projected with each side's facts at 16
bits; CPU profiles and "this-machine" with the facts as measured. A KV cache a KV stage compressed
keeps the bytes per token measured at the run's projection context (`Measurement.kv_bytes_context`).
"""

from __future__ import annotations

from compressor.errors import LabError
from compressor.measure import hardware as hw
from compressor.runs.contract import MeasuredCheck, ProjectedSide, Projection, Report

LARGE_BATCH = 16  # the "many sequences" decode figure beside batch 1
SIDES = ("baseline", "compressed")


def project_report(report: Report, hardware: str | hw.HardwareProfile, context: int, batch: int) -> Projection:
    """Both sides of `report` projected onto `hardware` (a profile id or a profile) at `context` tokens
    and `batch` sequences. The context is clamped to the positions the model was trained for."""
    if not all(side in report.footprint for side in SIDES):
        raise LabError("this report keeps no footprint (it was stored before reports kept one): run it again "
                       "to project it onto another profile.")
    for name, value in (("context", context), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"projection {name}={value!r} must be a positive integer, e.g. "
                           f"{2048 if name == 'context' else 1}.")
    profile = hardware if isinstance(hardware, hw.HardwareProfile) else hw.get_profile(hardware)
    run_dtype = hw.run_float_dtype(profile)
    facts = {side: report.footprint[side].float16 if run_dtype else report.footprint[side].measured
             for side in SIDES}
    ctx = min(context, facts["compressed"].max_context)
    sides = {side: _side(hw.project(profile, facts[side], ctx, batch, large_batch=LARGE_BATCH)) for side in SIDES}
    measured_dtype = report.footprint["compressed"].measured_dtype
    check = None
    if profile.id == hw.THIS_MACHINE and report.request.device == "cpu":
        # projected vs measured decode tokens/s on this machine, at the context the speed test used
        s = report.request.eval
        speed_ctx = s.speed_prompt_tokens + s.speed_new_tokens // 2
        check = {side: MeasuredCheck(1.0 / hw.decode_seconds(profile, facts[side], 1, speed_ctx),
                                     getattr(report, side).decode_tokens_per_s) for side in SIDES}
    return Projection(hardware=profile, context=ctx, batch=batch, baseline=sides["baseline"],
                      compressed=sides["compressed"],
                      float_dtype=f"{run_dtype} (projected)" if run_dtype else f"{measured_dtype} (as measured)",
                      context_clamped_from=context if ctx < context else None, check_against_measured=check,
                      label=hw.LABEL)


def _side(p: dict) -> ProjectedSide:
    """A `hardware.project` result as the contract's ProjectedSide."""
    return ProjectedSide.from_dict(p | {"large_batch": LARGE_BATCH,
                                        "decode_tokens_per_s_large_batch": p[f"decode_tokens_per_s_batch_{LARGE_BATCH}"]})


def projection_lines(report: Report, projection: Projection | None = None) -> list[str]:
    """One sentence per side that a person can read, each saying it is a projection (and, for a 16-bit
    profile, that the floats were counted as that profile holds them, not as measured here)."""
    p = projection or report.projection
    if p is None:
        return []
    floats = ""
    if p.float_dtype.endswith("(projected)"):
        measured = report.footprint["compressed"].measured_dtype if "compressed" in report.footprint else "float32"
        floats = (f" (floats as {p.float_dtype.split()[0]}, as {p.hardware.name} runs them; measured here in "
                  f"{measured})")
    lines = []
    for side in SIDES:
        d = getattr(p, side).to_dict() | {"hardware_name": p.hardware.name, "context": p.context, "batch": p.batch}
        lines.append(f"{side}{floats}: {hw.projection_text(d)}")
    return lines
