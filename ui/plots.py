"""One run's figures (plotly), each a pure function of a `Report`, and the plots panel.

Every figure is one column of panels with horizontal bars (names on the left, values at the bars' ends,
a full-width title above each panel), so it reads the same on a desktop and at phone width:
- quality first: perplexity as its change from the baseline (two equal bars say nothing), accuracy with
  its 95 % intervals, KL and top-1 agreement, each panel on its own scale;
- speed: decode and prefill on their own scales (decode is ~10x slower and vanished beside prefill), with
  the spread of the repeats; the projection in panels of its own, named by its profile;
- memory: weights + KV cache apart from the process's peak;
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
GOOD, BAD, INK = "#16a34a", "#dc2626", "#111827"
MiB = 2**20
SIDES = ("baseline", "compressed")
SPEED_FIGURES = ("decode_tokens_per_s", "prefill_tokens_per_s")
ROW_PX = 105  # height of one panel of two bars


def layout(fig: go.Figure, title: str, height: int = 340, **kw) -> go.Figure:
    """The house look: white, a short title that says what is plotted, room for labels."""
    kw.setdefault("showlegend", False)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font_size=14), template="plotly_white",
                      height=height, margin=dict(l=10, r=24, t=56, b=24), bargap=0.25, **kw)
    fig.update_annotations(font_size=12)  # panel titles
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def panels(titles: list[str]) -> go.Figure:
    """One column of panels, a title above each."""
    return make_subplots(rows=len(titles), cols=1, subplot_titles=titles, vertical_spacing=0.5 / len(titles))


def empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)


def scaled(value: object, scale: float) -> float | None:
    """`value` x `scale` for a bar, None (no bar) for anything that is not a number."""
    return value * scale if f.is_number(value) else None


def _label(value: float | None, fmt: str) -> str:
    return fmt.format(value) if f.is_number(value) else "n/a"


def hbars(fig: go.Figure, row: int, names: list[str], values: list, text: list[str], colors: list[str],
          error: dict | None = None, lo: float | None = None, **kw) -> None:
    """Horizontal bars in panel `row`, each labelled just past its end (past its error bar, if it has one, so
    the whisker never crosses the label), with room on the axis for the labels."""
    fig.add_bar(y=names, x=values, orientation="h", marker_color=colors, text=None if error else text,
                textposition="outside", cliponaxis=False, error_x=error, row=row, col=1,
                hovertemplate="%{y}: %{x:.4g}<extra></extra>", **kw)
    plus = list(error["array"]) if error else [0.0] * len(values)
    minus = list(error.get("arrayminus") or plus) if error else [0.0] * len(values)
    if error:
        axis = "" if row == 1 else str(row)
        for name, value, up, down, label in zip(names, values, plus, minus, text, strict=True):
            if f.is_number(value):  # past the whisker on the bar's own side
                left = value < 0
                fig.add_annotation(x=value - down if left else value + up, y=name, text=label, showarrow=False,
                                   xanchor="right" if left else "left", xshift=-5 if left else 5,
                                   xref=f"x{axis}", yref=f"y{axis}", font_size=12)
    nums = [v for v in values if f.is_number(v)]
    reach = [v + p for v, p in zip(values, plus, strict=True) if f.is_number(v)]
    top = max(reach, default=1.0) or 1.0
    low = min(min(nums, default=0.0), 0.0) if lo is None else lo
    fig.update_xaxes(range=[low - 0.35 * abs(top - low) * (low < 0), top + 0.4 * abs(top - low)], row=row, col=1)


def memory_plot(report: Report) -> go.Figure:
    """Weights and the KV cache at the evaluation context (stacked); the process's peak memory, which
    includes the Python runtime and libraries, in a panel of its own."""
    context = report.request.eval.context
    fig = panels([f"Weights + KV cache at {context} tokens (MiB)", "Peak process memory (MiB, with the runtime)"])
    sides = [report.baseline, report.compressed]
    weights = [scaled(s.weight_bytes, 1 / MiB) for s in sides]
    kv = [scaled(s.kv_bytes_per_token, context / MiB) for s in sides]
    totals = [(w or 0) + (k or 0) if w is not None else None for w, k in zip(weights, kv, strict=True)]
    fig.add_bar(y=list(SIDES), x=weights, orientation="h", name="weights", marker_color=[BASE_COLOR, COMP_COLOR],
                row=1, col=1, hovertemplate="weights %{x:.2f} MiB<extra></extra>")
    fig.add_bar(y=list(SIDES), x=kv, orientation="h", name="KV cache", marker_color=KV_COLOR, row=1, col=1,
                text=[_label(t, "{:.2f}") for t in totals], textposition="outside", cliponaxis=False,
                hovertemplate="KV cache %{x:.3f} MiB<extra></extra>")
    fig.update_xaxes(range=[0, 1.3 * max((t for t in totals if f.is_number(t)), default=1.0)], row=1, col=1)
    peaks = [scaled(s.peak_memory_bytes, 1 / MiB) for s in sides]
    waiting = "speed" in report.pending  # the peak is read during the speed run
    hbars(fig, 2, list(SIDES), peaks, ["measuring..." if waiting else _label(p, "{:.0f}") for p in peaks],
          [PEAK_COLOR, PEAK_COLOR])
    fig.update_yaxes(autorange="reversed")
    ratio = ""
    if f.is_number(weights[0]) and f.is_number(weights[1]) and weights[0] > 0:
        ratio = f": weights x{weights[1] / weights[0]:.2f}"
    return layout(fig, f"Memory{ratio} (green: KV cache)", height=2 * ROW_PX + 90, barmode="stack")


def _stat_bars(m: Measurement, attr: str) -> tuple[float | None, float, float]:
    """(median, plus, minus) of a batch-1 speed figure for an error bar; spread 0 when unknown."""
    stat = getattr(m.speed.batch1, attr, None) if m.speed is not None and m.speed.batch1 is not None else None
    if stat is None or not f.is_number(stat.median):
        return None, 0.0, 0.0
    hi = stat.max - stat.median if f.is_number(stat.max) else 0.0
    lo = stat.median - stat.min if f.is_number(stat.min) else 0.0
    return stat.median, max(hi, 0.0), max(lo, 0.0)


def speed_plot(report: Report, projected: bool = True) -> go.Figure:
    """Measured decode and prefill tokens/s (median; the line spans the slowest to the fastest repeat), each
    on its own scale; with `projected`, the projection on the report's profile in panels of their own."""
    if "speed" in report.pending:
        fig = go.Figure()
        empty(fig, "measuring speed...")
        return layout(fig, "Speed", height=200)
    proj = report.projection if projected else None

    def ratio(b: object, c: object) -> str:  # equal-looking bars still say how far apart they are
        return f": x{c / b:.2f}" if f.is_number(b) and f.is_number(c) and b > 0 else ""

    here = [ratio(getattr(report.baseline, a), getattr(report.compressed, a)) for a in SPEED_FIGURES]
    titles = [f"Decode tokens/s here (median, range){here[0]}", f"Prefill tokens/s here (median, range){here[1]}"]
    if proj is not None:
        there = [ratio(getattr(proj.baseline, a), getattr(proj.compressed, a)) for a in SPEED_FIGURES]
        titles += [f"Decode tokens/s on {proj.hardware.name[:24]} (projection){there[0]}",
                   f"Prefill tokens/s on {proj.hardware.name[:24]} (projection){there[1]}"]
    fig = panels(titles)
    for row, attr in enumerate(SPEED_FIGURES, start=1):
        stats = [_stat_bars(getattr(report, side), attr) for side in SIDES]
        hbars(fig, row, list(SIDES), [s[0] for s in stats], [f.fmt_rate(s[0]) for s in stats], [BASE_COLOR, COMP_COLOR],
              error=dict(type="data", symmetric=False, array=[s[1] for s in stats], arrayminus=[s[2] for s in stats],
                         color=INK, thickness=1.2), lo=0.0)
        if proj is not None:
            values = [getattr(getattr(proj, side), attr) for side in SIDES]
            hbars(fig, row + 2, list(SIDES), [scaled(v, 1) for v in values], [f.fmt_rate(v) for v in values],
                  [BASE_COLOR, COMP_COLOR], lo=0.0, marker_pattern_shape="/", opacity=0.75)
    fig.update_yaxes(autorange="reversed")
    title = "Speed: measured here" + (", and projected" if proj is not None else "")
    return layout(fig, title, height=len(titles) * ROW_PX + 80)


def _interval_bars(sides: list[Measurement]) -> dict | None:
    """Error bars of the arithmetic accuracy's 95 % intervals (in %), when both sides have one."""
    cis = [s.arithmetic.ci95 if s.arithmetic else None for s in sides]
    accs = [s.arithmetic_accuracy for s in sides]
    if not all(ci and f.is_number(a) and all(f.is_number(v) for v in ci) for ci, a in zip(cis, accs, strict=True)):
        return None
    return dict(type="data", symmetric=False, array=[100 * (ci[1] - a) for ci, a in zip(cis, accs, strict=True)],
                arrayminus=[100 * (a - ci[0]) for ci, a in zip(cis, accs, strict=True)], color=INK)


def quality_plot(report: Report) -> go.Figure:
    """Four panels, each on its own scale: perplexity's change from the baseline (%), arithmetic accuracy
    of both with 95 % intervals, KL to the baseline, and top-1 agreement."""
    base, comp = report.baseline, report.compressed
    change = None
    if f.is_number(base.perplexity) and f.is_number(comp.perplexity) and base.perplexity > 0:
        change = 100 * (comp.perplexity / base.perplexity - 1)
    fig = panels([f"Perplexity {f.fmt_num(base.perplexity)} -> {f.fmt_num(comp.perplexity)}: change (%)",
                  "Arithmetic accuracy (%), 95 % interval", "KL to baseline (nats; 0 = identical)",
                  "Top-1 agreement with baseline (%)"])
    text = f"{change:+.2f} %" if change is not None else "n/a"
    fig.add_bar(y=["compressed"], x=[change], orientation="h", marker_color=[BAD if (change or 0) > 0 else GOOD],
                text=[text], textposition="outside", cliponaxis=False, row=1, col=1)
    span = max(abs(change or 0.0) * 3.2, 1.0)
    fig.update_xaxes(range=[-span, span], zeroline=True, zerolinecolor=INK, row=1, col=1)
    accs = [scaled(base.arithmetic_accuracy, 100), scaled(comp.arithmetic_accuracy, 100)]
    hbars(fig, 2, list(SIDES), accs, [_label(a, "{:.1f}") for a in accs], [BASE_COLOR, COMP_COLOR],
          error=_interval_bars([base, comp]), lo=0.0)
    fig.update_xaxes(range=[0, 115], row=2, col=1)
    hbars(fig, 3, ["compressed"], [scaled(comp.kld, 1)], [f.fmt_kl(comp.kld)], [COMP_COLOR], lo=0.0)
    if not (f.is_number(comp.kld) and comp.kld > 0):
        fig.update_xaxes(range=[0, 1e-3], row=3, col=1)
    top1 = scaled(comp.top1_agreement, 100)
    hbars(fig, 4, ["compressed"], [top1], [_label(top1, "{:.1f} %")], [COMP_COLOR], lo=0.0)
    fig.update_xaxes(range=[0, 115], row=4, col=1)
    fig.update_yaxes(autorange="reversed")
    return layout(fig, "Quality (each panel on its own scale)", height=4 * ROW_PX + 60)


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
    fig = make_subplots(rows=len(by_stage), cols=1, subplot_titles=list(by_stage), vertical_spacing=0.12)
    n_layers = 1
    for col, rs in enumerate(by_stage.values(), start=1):  # one panel per stage, stacked
        layers = sorted({short_module(r.name)[0] for r in rs}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit()
                                                                             else 0, s))
        kinds = list(dict.fromkeys(short_module(r.name)[1] for r in rs))
        grid = {short_module(r.name): r.sqnr_db for r in rs}
        z = [[grid.get((layer, k)) for k in kinds] for layer in layers]
        fig.add_heatmap(z=z, x=kinds, y=[f"layer {x}" if x.isdigit() else x for x in layers], row=col, col=1,
                        colorscale="Viridis", coloraxis="coloraxis", xgap=1, ygap=1,
                        hovertemplate="%{y} %{x}: %{z:.1f} dB<extra></extra>")
        n_layers = max(n_layers, len(layers))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-40)
    return layout(fig, "Per-module SQNR (dB; higher = closer)", height=140 + (60 + 16 * n_layers) * len(by_stage),
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
    with gr.Row(elem_classes="lab-plot-row"):  # side by side on a desktop, one under the other on a phone
        quality = gr.Plot(show_label=False, elem_classes="lab-plot", elem_id="lab-plot-quality", min_width=340)
        speed = gr.Plot(show_label=False, elem_classes="lab-plot", elem_id="lab-plot-speed", min_width=340)
    with gr.Row(elem_classes="lab-plot-row"):
        memory = gr.Plot(show_label=False, elem_classes="lab-plot", elem_id="lab-plot-memory", min_width=340)
        layers = gr.Plot(show_label=False, elem_classes="lab-plot", elem_id="lab-plot-layers", min_width=340)
    return PlotsPanel(show_projected, memory, speed, quality, layers)
