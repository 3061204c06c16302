"""The hardware panel: fit, capacity and speed of both models on the chosen profile (a roofline
projection, labelled as one), and the run's sanity report (stages, effective bits, kernel paths,
environment, timings, warnings)."""

from __future__ import annotations

import dataclasses
import html
import time
from dataclasses import dataclass

import gradio as gr

from compressor.runs import format as f
from compressor.runs.contract import ProjectedSide, Projection, Report

EMPTY = '<div class="lab-empty">Run a comparison to see whether it fits.</div>'


@dataclass
class HardwarePanel:
    projection: gr.HTML
    details: gr.Markdown

    @property
    def outputs(self) -> list:
        return [self.projection, self.details]

    @staticmethod
    def render(report: Report) -> list:
        return [hardware_html(report), details_markdown(report)]


def hardware_panel() -> HardwarePanel:
    """The "Hardware (projection)" tab's contents; call inside it."""
    return HardwarePanel(gr.HTML(EMPTY, elem_id="lab-hardware-panel"), gr.Markdown())


def _side_rows(p: ProjectedSide, proj: Projection) -> list[tuple[str, str]]:
    return [
        ("Memory needed / usable", f"{f.fmt_bytes(p.memory_needed_bytes)} / {f.fmt_bytes(p.memory_usable_bytes)}"),
        ("Max context at batch 1", f.fmt_int(p.max_context_at_batch_1)),
        (f"Max batch at context {proj.context}", f.fmt_int(p.max_batch_at_context)),
        ("Decode tokens/s (batch 1)", f.fmt_rate(p.decode_tokens_per_s)),
        (f"Decode tokens/s (batch {p.large_batch})", f.fmt_rate(p.decode_tokens_per_s_large_batch)),
        ("Prefill tokens/s", f.fmt_rate(p.prefill_tokens_per_s)),
        ("Time to first token", f.fmt_latency(p.time_to_first_token_s)),
        ("Decode bound by", p.decode_bound or f.NA),
    ]


def hardware_html(report: Report) -> str:
    """Both models on the report's hardware profile, labelled as a projection, with its warnings and, on
    this machine, the projection checked against the measured decode speed."""
    proj = report.projection
    if proj is None and "projection" in report.pending:
        return '<div class="lab-empty">Projecting onto the chosen profile: it comes with the last figures.</div>'
    if proj is None:
        return '<div class="lab-empty">No projection in this report.</div>'
    clamped = (f" (asked for {proj.context_clamped_from}: the model's positions end at {proj.context})"
               if proj.context_clamped_from else "")
    at = f"context {proj.context} x batch {proj.batch}{clamped}"
    floats = f"; floats counted as {proj.float_dtype}" if proj.float_dtype else ""
    parts = [f'<div class="lab-hw-head"><span class="lab-proj-tag">{html.escape(proj.label)}</span> '
             f"<b>{html.escape(proj.hardware.name)}</b> · roofline model at {html.escape(at)}{html.escape(floats)}, "
             "not a measurement</div>", '<div class="lab-hw">']
    for side in ("baseline", "compressed"):
        p: ProjectedSide = getattr(proj, side)
        badge = '<span class="lab-fit yes">fits</span>' if p.fits else '<span class="lab-fit no">does not fit</span>'
        table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _side_rows(p, proj))
        parts.append(f'<div class="lab-hw-col"><div class="lab-gen-h">{side.title()} {badge}</div>'
                     f"<table>{table}</table></div>")
    parts.append("</div>")
    if proj.warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in proj.warnings)
        parts.append(f'<div class="lab-warn"><b>Warnings</b><ul>{items}</ul></div>')
    for side, check in (proj.check_against_measured or {}).items():
        ratio = f" (x{check.ratio:.2f})" if f.is_number(check.ratio) else ""
        parts.append(f'<div class="lab-note">Check on this machine ({html.escape(side)}, decode batch 1): projected '
                     f"{f.fmt_rate(check.projected_decode_tokens_per_s)} vs measured "
                     f"{f.fmt_rate(check.measured_decode_tokens_per_s)} tokens/s{ratio}.</div>")
    return "".join(parts)


def details_markdown(report: Report) -> str:
    """The run's sanity report as text: what was compressed and how, where it ran, how long it took."""
    c, q = report.compression, report.compressed.quality
    eb, sp = c.effective_bits, c.sparsity
    m = report.model
    lines = [f"**Model:** {m.spec} ({m.architecture or 'architecture n/a'}, {f.fmt_int(m.n_params)} parameters)"
             + (f", {m.source}" if m.source else ""),
             f"**Compression:** weights {f.fmt_bytes(c.weight_bytes_before)} -> {f.fmt_bytes(c.weight_bytes_after)}"
             + (f", effective bits {eb:.3f}" if f.is_number(eb) else "")
             + (f", sparsity {f.fmt_pct(sp)}" if f.is_number(sp) else "")]
    for s in c.stages:
        lines.append(f"- stage {s.index}: **{s.method}** ({s.kind}), {s.n_modules} modules"
                     + (f", {f.fmt_duration(s.seconds)}" if f.is_number(s.seconds) else ""))
    if q is not None:
        top_k = f", KL over the baseline's top {q.reference_top_k} + tail" if q.reference_top_k else ""
        lines.append(f"**Evaluation:** perplexity over {q.n_tokens} tokens, window {q.context}, "
                     f"stride {q.stride}{top_k}"
                     + (f"; arithmetic exact match on {report.compressed.arithmetic.n} problems"
                        if report.compressed.arithmetic else ""))
    paths = report.compressed.kernel_paths
    if paths:
        lines.append("**Kernel paths (compressed model):** " + ", ".join(f"{k}: {v}" for k, v in paths.items()))
    if report.environment is not None:
        env = dataclasses.asdict(report.environment)
        lines.append("**Environment:** " + ", ".join(f"{k} {v}" for k, v in env.items() if v not in (None, "")))
    t = report.timings
    shown = [f"{fd.name.removesuffix('_s')} {f.fmt_duration(getattr(t, fd.name))}" for fd in dataclasses.fields(t)
             if fd.name.endswith("_s") and f.is_number(getattr(t, fd.name))]  # durations; not the cache's date
    cached = (" (baseline from cache" + (time.strftime(", measured %d %b %H:%M", time.localtime(t.baseline_cached_at))
                                         if f.is_number(t.baseline_cached_at) else "") + ")") if t.baseline_cached else ""
    if shown:
        lines.append("**Timings:** " + ", ".join(shown) + cached)
    for w in dict.fromkeys(report.warnings + c.warnings):
        lines.append(f"- warning: {w}")
    return "\n\n".join(lines)
