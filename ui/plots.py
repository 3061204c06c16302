"""One run's figures (plotly), each a pure function of a `Report`, and the plots panel.

What each figure is for, and how it stays readable at a glance and at phone width:
- memory: horizontal bars (names on the left, values at the bars' ends), weights + KV cache apart from
  the process's peak, each on its own scale;
- speed: decode and prefill on their own scales (decode is ~10x slower than prefill and vanished beside
  it), with the spread of the repeats; the projection on a second row, titled with its profile;
- quality: one panel per figure, each on its own scale; perplexity as the change from the baseline
  (two equal bars say nothing), accuracy with its 95 % intervals;
- per-layer error: a heatmap, layer by module kind, so 200 modules need no 200 tick labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from compressor.runs import format as f
from compressor.runs.contract import Measurement, Report

BASE_COLOR, COMP_COLOR, KV_COLOR, PEAK_COLOR = "#64748b", "#4f46e5", "#16a34a", "#94a3b8"
GOOD, BAD = "#16a34a", "#dc2626"
MiB = 2**20
SIDES = ("baseline", "compressed")


def layout(fig: go.Figure, title: str, height: int = 340, **kw) -> go.Figure:
    """The house look: white, a title that says what is plotted, legend under the plot, room for labels."""
    kw.setdefault("showlegend", False)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font_size=15), template="plotly_white",
                      height=height, margin=dict(l=10, r=20, t=70, b=30), **kw)
    fig.update_annotations(font_size=12)  # subplot titles
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)


def scaled(value: object, scale: float) -> float | None:
    """`value` x `scale` for a bar, None (no bar) for anything that is not a number."""
    return value * scale if f.is_number(value) else None


def _label(value: float | None, fmt: str) -> str:
    return fmt.format(value) if f.is_number(value) else "n/a"


def memory_plot(report: Report) -> go.Figure:
    """Top: weights and the KV cache at the evaluation context (stacked). Bottom: the process's peak
    memory, which includes the Python runtime and libraries, on its own scale."""
    context = report.request.eval.context
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.3,
                        subplot_titles=(f"Weights + KV cache at {context} tokens (MiB)",
                                        "Peak process memory (MiB, includes the runtime)"))
    sides = [report.baseline, report.compressed]
    weights = [scaled(s.weight_bytes, 1 / MiB) for s in sides]
    kv = [scaled(s.kv_bytes_per_token, context / MiB) for s in sides]
    totals = [(w or 0) + (k or 0) if w is not None else None for w, k in zip(weights, kv, strict=True)]
    fig.add_bar(y=list(SIDES), x=weights, orientation="h", name="weights", marker_color=[BASE_COLOR, COMP_COLOR],
                row=1, col=1, hovertemplate="weights %{x:.2f} MiB<extra></extra>")
    fig.add_bar(y=list(SIDES), x=kv, orientation="h", name="KV cache", marker_color=KV_COLOR, row=1, col=1,
                text=[_label(t, "{:.2f}") for t in totals], textposition="outside", cliponaxis=False,
                hovertemplate="KV cache %{x:.3f} MiB<extra></extra>")
    peaks = [scaled(s.peak_memory_bytes, 1 / MiB) for s in sides]
    fig.add_bar(y=list(SIDES), x=peaks, orientation="h", marker_color=PEAK_COLOR, row=2, col=1,
                text=[_label(p, "{:.0f}") for p in peaks], textposition="outside", cliponaxis=False,
                hovertemplate="peak %{x:.0f} MiB<extra></extra>")
    for row, values in ((1, totals), (2, peaks)):
        top = max((v for v in values if f.is_number(v)), default=1.0)
        fig.update_xaxes(range=[0, 1.25 * top], row=row, col=1)  # room for the value labels
    fig.update_yaxes(autorange="reversed")
    ratio = ""
    if f.is_number(weights[0]) and f.is_number(weights[1]) and weights[0] > 0:
        ratio = f": compressed weights are x{weights[1] / weights[0]:.2f} the baseline's"
    return layout(fig, f"Memory{ratio}", height=360, barmode="stack")


def _stat_bars(m: Measurement, attr: str) -> tuple[float | None, float, float]:
    """(median, plus, minus) of a batch-1 speed figure for an error bar; spread 0 when unknown."""
    stat = getattr(m.speed.batch1, attr, None) if m.speed is not None and m.speed.batch1 is not None else None
    if stat is None or not f.is_number(stat.median):
        return None, 0.0, 0.0
    hi = stat.max - stat.median if f.is_number(stat.max) else 0.0
    lo = stat.median - stat.min if f.is_number(stat.min) else 0.0
    return stat.median, max(hi, 0.0), max(lo, 0.0)


def speed_plot(report: Report, projected: bool = True) -> go.Figure:
    """Measured decode and prefill tokens/s (median, bars from the slowest to the fastest repeat), each on
    its own scale; with `projected`, the projection on the report's profile on a second row."""
    proj = report.projection if projected else None
    rows = 2 if proj is not None else 1
    titles = ["Decode tokens/s, this machine", "Prefill tokens/s, this machine"]
    if proj is not None:
        titles += [f"Decode tokens/s, {proj.hardware.name} (projection)",
                   f"Prefill tokens/s, {proj.hardware.name} (projection)"]
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles, horizontal_spacing=0.16, vertical_spacing=0.3)
    for col, attr in ((1, "decode_tokens_per_s"), (2, "prefill_tokens_per_s")):
        stats = [_stat_bars(getattr(report, side), attr) for side in SIDES]
        fig.add_bar(x=list(SIDES), y=[s[0] for s in stats], marker_color=[BASE_COLOR, COMP_COLOR], row=1, col=col,
                    error_y=dict(type="data", symmetric=False, array=[s[1] for s in stats],
                                 arrayminus=[s[2] for s in stats], color="#111827", thickness=1.2),
                    text=[f.fmt_rate(s[0]) for s in stats], textposition="inside", insidetextanchor="start",
                    hovertemplate="%{x}: %{y:.1f} tokens/s<extra></extra>")
        if proj is not None:
            values = [getattr(getattr(proj, side), attr) for side in SIDES]
            fig.add_bar(x=list(SIDES), y=[scaled(v, 1) for v in values], marker_color=[BASE_COLOR, COMP_COLOR],
                        marker_pattern_shape="/", opacity=0.7, row=2, col=col, text=[f.fmt_rate(v) for v in values],
                        textposition="inside", insidetextanchor="start",
                        hovertemplate="%{x}: %{y:.0f} tokens/s (projection)<extra></extra>")
    title = "Speed: measured here" + (f", and projected on {proj.hardware.name}" if proj is not None else "")
    return layout(fig, title, height=300 if rows == 1 else 540)


def _interval_bars(sides: list[Measurement]) -> dict | None:
    """Error bars of the arithmetic accuracy's 95 % intervals (in %), when both sides have one."""
    cis = [s.arithmetic.ci95 if s.arithmetic else None for s in sides]
    accs = [s.arithmetic_accuracy for s in sides]
    if not all(ci and f.is_number(a) and all(f.is_number(v) for v in ci) for ci, a in zip(cis, accs, strict=True)):
        return None
    return dict(type="data", symmetric=False, array=[100 * (ci[1] - a) for ci, a in zip(cis, accs, strict=True)],
                arrayminus=[100 * (a - ci[0]) for ci, a in zip(cis, accs, strict=True)], color="#111827")


def quality_plot(report: Report) -> go.Figure:
    """Four panels, each on its own scale: perplexity's change from the baseline (%), arithmetic accuracy
    of both with 95 % intervals, KL to the baseline, and top-1 agreement."""
    base, comp = report.baseline, report.compressed
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.18, vertical_spacing=0.32,
                        subplot_titles=("Perplexity change vs baseline (%)", "Arithmetic accuracy (%), 95 % CI",
                                        "KL to baseline (nats, lower = closer)", "Top-1 agreement (%)"))
    change = None
    if f.is_number(base.perplexity) and f.is_number(comp.perplexity) and base.perplexity > 0:
        change = 100 * (comp.perplexity / base.perplexity - 1)
    fig.add_bar(x=["compressed"], y=[change], marker_color=[BAD if (change or 0) > 0 else GOOD], row=1, col=1,
                text=[f"{change:+.2f} % ({f.fmt_num(base.perplexity)} -> {f.fmt_num(comp.perplexity)})"
                      if change is not None else "n/a"], textposition="outside", cliponaxis=False)
    span = max(abs(change or 0.0) * 1.6, 1.0)
    fig.update_yaxes(range=[-span, span], zeroline=True, zerolinecolor="#111827", row=1, col=1)
    accs = [scaled(base.arithmetic_accuracy, 100), scaled(comp.arithmetic_accuracy, 100)]
    fig.add_bar(x=list(SIDES), y=accs, error_y=_interval_bars([base, comp]), marker_color=[BASE_COLOR, COMP_COLOR],
                row=1, col=2, text=[_label(a, "{:.1f}") for a in accs], textposition="inside",
                insidetextanchor="start")
    fig.update_yaxes(range=[0, 105], row=1, col=2)
    fig.add_bar(x=["compressed"], y=[scaled(comp.kld, 1)], marker_color=[COMP_COLOR], row=2, col=1,
                text=[f.fmt_kl(comp.kld)], textposition="outside", cliponaxis=False)
    kl = comp.kld if f.is_number(comp.kld) else 0.0
    fig.update_yaxes(range=[0, max(kl * 1.4, 1e-3)], row=2, col=1)
    top1 = scaled(comp.top1_agreement, 100)
    fig.add_bar(x=["compressed"], y=[top1], marker_color=[COMP_COLOR], row=2, col=2,
                text=[_label(top1, "{:.1f} %")], textposition="inside", insidetextanchor="start")
    fig.update_yaxes(range=[min(top1 or 0.0, 100) - 10 if top1 is not None else 0, 101], row=2, col=2)
    return layout(fig, "Quality: each figure on its own scale", height=520)


def short_module(name: str) -> tuple[str, str]:
    """model.layers.3.self_attn.q_proj -> ("3", "q_proj"); lm_head -> ("other", "lm_head")."""
    m = re.search(r"layers?\.(\d+)\..*?(\w+)$", name)
    return (m.group(1), m.group(2)) if m else ("other", name.rsplit(".", 1)[-1])


def layer_error_plot(report: Report) -> go.Figure:
    """Each compressed module's SQNR (dB, higher = closer to the original) as a heatmap: decoder layer by
    module kind, one panel per stage that recorded SQNR."""
    rows = [r for r in report.compression.layers if f.is_number(r.sqnr_db)]
    fig = go.Figure()
    if not rows:
        empty(fig, "No per-layer SQNR in this report")
        return layout(fig, "Per-layer error", height=240)
    by_stage: dict[str, list] = {}
    for r in rows:
        by_stage.setdefault(f"stage {r.stage}: {r.method}", []).append(r)
    fig = make_subplots(rows=1, cols=len(by_stage), subplot_titles=list(by_stage), horizontal_spacing=0.12)
    n_layers = 1
    for col, rs in enumerate(by_stage.values(), start=1):
        layers = sorted({short_module(r.name)[0] for r in rs}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit()
                                                                             else 0, s))
        kinds = list(dict.fromkeys(short_module(r.name)[1] for r in rs))
        grid = {short_module(r.name): r.sqnr_db for r in rs}
        z = [[grid.get((layer, k)) for k in kinds] for layer in layers]
        fig.add_heatmap(z=z, x=kinds, y=[f"layer {x}" if x.isdigit() else x for x in layers], row=1, col=col,
                        colorscale="Viridis", coloraxis="coloraxis", xgap=1, ygap=1,
                        hovertemplate="%{y} %{x}: %{z:.1f} dB<extra></extra>")
        n_layers = max(n_layers, len(layers))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-40)
    return layout(fig, "Per-module SQNR (dB, higher = closer to the original)", height=180 + 16 * n_layers,
                  coloraxis=dict(colorscale="Viridis", colorbar=dict(title="dB", thickness=12)))


# -- the panel -------------------------------------------------------------------------------------


@dataclass
class PlotsPanel:
    show_projected: gr.Checkbox
    memory: gr.Plot
    speed: gr.Plot
    quality: gr.Plot
    layers: gr.Plot

    @property
    def outputs(self) -> list:
        return [self.memory, self.speed, self.quality, self.layers]

    @staticmethod
    def render(report: Report, projected: bool) -> list:
        return [memory_plot(report), speed_plot(report, projected), quality_plot(report), layer_error_plot(report)]


def plots_panel() -> PlotsPanel:
    """The "Plots" tab's contents; call inside it. ui.session redraws them when the box or the projection
    changes."""
    show_projected = gr.Checkbox(True, label="Show projected speed (hardware profile) under the measured one",
                                 elem_id="lab-show-projected")
    quality = gr.Plot(label="Quality", elem_classes="lab-plot", elem_id="lab-plot-quality")
    speed = gr.Plot(label="Speed", elem_classes="lab-plot", elem_id="lab-plot-speed")
    memory = gr.Plot(label="Memory", elem_classes="lab-plot", elem_id="lab-plot-memory")
    layers = gr.Plot(label="Per-layer error", elem_classes="lab-plot", elem_id="lab-plot-layers")
    return PlotsPanel(show_projected, memory, speed, quality, layers)
