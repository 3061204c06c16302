"""Every figure on the page (plotly), each a pure function of a `Report` (or of finished runs), and the
plots panel that shows one run's figures."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from compressor.runs import format as f
from compressor.runs.contract import Measurement, Report
from compressor.runs.store import RunRecord
from ui.recipes import recipe_label

BASE_COLOR, COMP_COLOR = "#7c8a9e", "#4f46e5"
MiB = 2**20


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=330, margin=dict(l=50, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.2), **kw)
    fig.update_annotations(font_size=12)  # subplot titles
    return fig


def _empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")


def _scaled(value: object, scale: float) -> float | None:
    """`value` x `scale` for a bar, None (no bar) for anything that is not a number."""
    return value * scale if f.is_number(value) else None


def memory_plot(report: Report) -> go.Figure:
    """Left: weights and KV cache at the evaluation context (stacked). Right: peak process memory,
    which includes the Python runtime and libraries, so it is shown apart."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("Weights + KV cache", "Peak process memory"))
    context = report.request.eval.context
    x = ["baseline", "compressed"]
    sides = [report.baseline, report.compressed]
    fig.add_bar(name="weights", x=x, y=[_scaled(s.weight_bytes, 1 / MiB) for s in sides], marker_color=COMP_COLOR,
                row=1, col=1)
    fig.add_bar(name=f"KV cache ({context} tokens)", x=x, marker_color="#22c55e", row=1, col=1,
                y=[_scaled(s.kv_bytes_per_token, context / MiB) for s in sides])
    fig.add_bar(name="peak RSS", x=x, y=[_scaled(s.peak_memory_bytes, 1 / MiB) for s in sides], marker_color="#cbd5e1",
                row=1, col=2)
    fig.update_yaxes(title_text="MiB", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=2)
    return _layout(fig, "Memory (MiB)", barmode="stack")


def throughput_plot(report: Report, projected: bool = False) -> go.Figure:
    """Measured prefill and decode tokens/s of both models; with `projected`, the hardware projection's
    beside them (hatched, labelled)."""
    fig = go.Figure()
    cats = ["prefill", "decode"]
    for side, color in (("baseline", BASE_COLOR), ("compressed", COMP_COLOR)):
        m: Measurement = getattr(report, side)
        fig.add_bar(name=f"{side} (measured)", x=cats, marker_color=color,
                    y=[_scaled(m.prefill_tokens_per_s, 1), _scaled(m.decode_tokens_per_s, 1)])
        if projected and report.projection is not None:
            p = getattr(report.projection, side)
            fig.add_bar(name=f"{side} (projected)", x=cats, marker_color=color, opacity=0.45,
                        marker_pattern_shape="/",
                        y=[_scaled(p.prefill_tokens_per_s, 1), _scaled(p.decode_tokens_per_s, 1)])
    return _layout(fig, "Throughput (tokens/s)", barmode="group", yaxis_title="tokens/s")


def _interval_bars(sides: list[Measurement]) -> dict | None:
    """Error bars of the arithmetic accuracy's 95 % intervals (in %), when both sides have one."""
    cis = [s.arithmetic.ci95 if s.arithmetic else None for s in sides]
    accs = [s.arithmetic_accuracy for s in sides]
    if not all(ci and f.is_number(a) and all(f.is_number(v) for v in ci) for ci, a in zip(cis, accs, strict=True)):
        return None
    return dict(type="data", symmetric=False, array=[100 * (ci[1] - a) for ci, a in zip(cis, accs, strict=True)],
                arrayminus=[100 * (a - ci[0]) for ci, a in zip(cis, accs, strict=True)])


def quality_plot(report: Report) -> go.Figure:
    """Perplexity, arithmetic accuracy (with its 95 % intervals) and the compressed model's KL and top-1
    agreement to the baseline."""
    base, comp = report.baseline, report.compressed
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Perplexity ↓", "Arithmetic %", "KL x100 · top-1 %"))
    x, colors = ["baseline", "compressed"], [BASE_COLOR, COMP_COLOR]
    fig.add_bar(x=x, y=[_scaled(base.perplexity, 1), _scaled(comp.perplexity, 1)], marker_color=colors,
                row=1, col=1, showlegend=False)
    fig.add_bar(x=x, y=[_scaled(base.arithmetic_accuracy, 100), _scaled(comp.arithmetic_accuracy, 100)],
                error_y=_interval_bars([base, comp]), marker_color=colors, row=1, col=2, showlegend=False)
    fig.add_bar(x=["KL x100", "top-1 %"], y=[_scaled(comp.kld, 100), _scaled(comp.top1_agreement, 100)],
                marker_color=[COMP_COLOR, COMP_COLOR], row=1, col=3, showlegend=False)
    return _layout(fig, "Quality")


def _short_name(name: str) -> str:
    """model.layers.3.self_attn.q_proj -> L3.q_proj"""
    m = re.search(r"layers?\.(\d+)\..*?(\w+)$", name)
    return f"L{m.group(1)}.{m.group(2)}" if m else name.rsplit(".", 1)[-1]


def layer_error_plot(report: Report) -> go.Figure:
    """Each compressed module's SQNR (dB), one bar group per stage."""
    rows = [r for r in report.compression.layers if f.is_number(r.sqnr_db)]
    fig = go.Figure()
    if not rows:
        _empty(fig, "No per-layer SQNR in this report")
        return _layout(fig, "Per-layer error")
    by_stage: dict[str, list] = {}
    for r in rows:
        by_stage.setdefault(f"stage {r.stage} {r.method}", []).append(r)
    for label, rs in by_stage.items():
        fig.add_bar(x=[_short_name(r.name) for r in rs], y=[r.sqnr_db for r in rs], name=label)
    return _layout(fig, "Per-layer SQNR (dB, higher is better)", xaxis_tickangle=-45, xaxis_tickfont_size=9,
                   barmode="group")


# -- history ---------------------------------------------------------------------------------------

# quality axis label -> the compressed Measurement's attribute
QUALITY_AXES = {
    "KL to baseline (lower better)": "kld",
    "Perplexity (lower better)": "perplexity",
    "Top-1 agreement (higher better)": "top1_agreement",
    "Arithmetic accuracy (higher better)": "arithmetic_accuracy",
}
X_AXES = ("Weight memory", "Projected decode tokens/s")


def pareto_plot(runs: list[tuple[RunRecord, Report]], quality: str, x_axis: str,
                selected: list[str] | None = None) -> go.Figure:
    """Memory (or projected speed) against quality over finished runs; the front is drawn."""
    attr = QUALITY_AXES.get(quality, "kld")
    projected = x_axis.startswith("Projected")
    pts = []
    for run, rep in runs:
        y = getattr(rep.compressed, attr)
        if projected:
            x = rep.projection.compressed.decode_tokens_per_s if rep.projection is not None else None
        else:
            x = _scaled(rep.compressed.weight_bytes, 1 / MiB)
        if not (f.is_number(x) and f.is_number(y)):  # NaN/inf cannot be placed, and NaN breaks every comparison
            continue
        pts.append((x, y, run.id, f"{run.model_spec} · {recipe_label(rep.request.recipe)}"))
    fig = go.Figure()
    if not pts:
        _empty(fig, "No finished runs with these numbers yet")
        return _layout(fig, "Pareto: memory vs quality")
    sel = set(selected or [])
    fig.add_scatter(
        x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="runs",
        text=[f"{p[3]} ({p[2]})" for p in pts], hovertemplate="%{text}<br>x=%{x:.3g}<br>y=%{y:.4g}<extra></extra>",
        marker=dict(size=[14 if p[2] in sel else 9 for p in pts],
                    color=[COMP_COLOR if p[2] in sel else BASE_COLOR for p in pts]),
    )
    front = pareto_front(pts, lower_x=not projected, lower_y="lower" in quality)
    fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                    line=dict(color="#22c55e", dash="dot"))
    xt = "Projected decode tokens/s (projection)" if projected else "Weight memory (MiB)"
    return _layout(fig, "Pareto: memory vs quality over the history", xaxis_title=xt, yaxis_title=quality)


def pareto_front(points: list[tuple], lower_x: bool = True, lower_y: bool = True) -> list[tuple]:
    """The non-dominated points of (x, y, ...) tuples: those that no other point matches or beats on both
    axes while beating on one. Sorted best x first; points with a NaN coordinate are left out."""
    sx, sy = (1 if lower_x else -1), (1 if lower_y else -1)
    ok = [p for p in points if not (math.isnan(p[0]) or math.isnan(p[1]))]
    front, best = [], math.inf
    # best x first and, among equal x, best y first: a later point is on the front only if its y is
    # strictly better than every point before it (equal x with a worse y is dominated)
    for p in sorted(ok, key=lambda p: (sx * p[0], sy * p[1])):
        if sy * p[1] < best:
            front.append(p)
            best = sy * p[1]
    return front


# -- the panel -------------------------------------------------------------------------------------


@dataclass
class PlotsPanel:
    show_projected: gr.Checkbox
    memory: gr.Plot
    throughput: gr.Plot
    quality: gr.Plot
    layers: gr.Plot

    @property
    def outputs(self) -> list:
        return [self.memory, self.throughput, self.quality, self.layers]

    @staticmethod
    def render(report: Report, projected: bool) -> list:
        return [memory_plot(report), throughput_plot(report, projected), quality_plot(report), layer_error_plot(report)]


def plots_panel(shown_report: Callable[[str | None], Report | None], run_id: gr.State) -> PlotsPanel:
    """The "Plots" tab's contents; call inside it. `shown_report(run_id)` is the report on show, so the
    projected-speed box can redraw its throughput plot."""
    show_projected = gr.Checkbox(False, label="Show projected speed (hardware profile)")
    with gr.Row():
        memory = gr.Plot(label="Memory", elem_classes="lab-plot")
        throughput = gr.Plot(label="Throughput", elem_classes="lab-plot")
    with gr.Row():
        quality = gr.Plot(label="Quality", elem_classes="lab-plot")
        layers = gr.Plot(label="Per-layer error", elem_classes="lab-plot")

    def on_projected(rid: str | None, projected: bool):
        report = shown_report(rid)
        return gr.update() if report is None else throughput_plot(report, projected)

    show_projected.change(on_projected, [run_id, show_projected], throughput, api_visibility="private")
    return PlotsPanel(show_projected, memory, throughput, quality, layers)
