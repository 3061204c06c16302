"""The "Fit to hardware" figures, pure functions of a sensitivity map and a fit (plotly only, no Gradio):

- `sensitivity_heatmap`: layers x formats, the predicted KL if the whole layer took that format (log
  scale), so where the sensitivity is shows at a glance; the head and other modules outside the layers
  get a row of their own;
- `cost_curve`: the minimum predicted KL at every weight size the formats allow, with the fitted recipe,
  the budget and the uniform RTN recipes marked on it.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from compressor.engine.stage import fallback_group
from compressor.fit.fitting import FitResult
from compressor.fit.formats import FP, Format
from compressor.fit.sensitivity import ModuleCost, SensitivityMap

MiB = 2**20
FIT_COLOR, BUDGET_COLOR, UNIFORM_COLOR, CURVE_COLOR = "#4f46e5", "#dc2626", "#64748b", "#94a3b8"


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font_size=14), template="plotly_white",
                      height=height, margin=dict(l=10, r=24, t=56, b=24))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _cost(m: ModuleCost, fmt: str) -> float | None:
    """The module's cost in `fmt`, through the engine's group fallback when the group does not divide it."""
    if fmt in m.costs:
        return m.costs[fmt]
    f = Format.parse(fmt)
    g = fallback_group(m.in_features, f.group_for(m.in_features))
    return m.costs.get(Format(f.bits, -1 if g == m.in_features else g).name)


def sensitivity_heatmap(smap: SensitivityMap) -> go.Figure:
    """Rows: decoder layers (then modules outside them, e.g. the head); columns: the palette's formats;
    colour: log10 of the predicted KL (nats per token) with that row's modules in that format."""
    formats = [f for f in smap.formats if f != FP]
    rows: dict[str, list[ModuleCost]] = {}
    for m in smap.modules:
        rows.setdefault(f"layer {m.layer}" if m.layer is not None else m.name, []).append(m)
    z, text = [], []
    for mods in rows.values():
        costs = [[_cost(m, f) for m in mods] for f in formats]
        totals = [sum(c) if all(v is not None for v in c) else None for c in costs]
        z.append([math.log10(t) if t else None for t in totals])
        text.append([f"{t:.2e}" if t is not None else "n/a" for t in totals])
    fig = go.Figure(go.Heatmap(z=z, x=formats, y=list(rows), text=text, colorscale="Viridis",
                               colorbar=dict(title="log10 KL"),
                               hovertemplate="%{y}, %{x}: predicted KL %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    title = f"Where the sensitivity is: predicted KL per layer and format ({smap.estimator})"
    return _layout(fig, title, height=max(320, 60 + 16 * len(rows)))


def cost_curve(result: FitResult) -> go.Figure:
    """Predicted KL against weight MiB: the best at every size (the curve), the fitted recipe, the budget,
    and the uniform RTN recipes (whose distance above the curve is what fitting buys)."""
    a = result.allocation
    fig = go.Figure()
    pts = [(b / MiB, kl) for b, kl in a.curve if kl > 0]
    if pts:
        xs, ys = zip(*pts, strict=True)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best at each size (predicted)",
                                 line=dict(color=CURVE_COLOR)))
    if result.uniform:
        fig.add_trace(go.Scatter(x=[u["bytes"] / MiB for u in result.uniform],
                                 y=[u["predicted_kl"] for u in result.uniform], mode="markers+text",
                                 text=[f"uniform {u['format']}" for u in result.uniform],
                                 # alternate sides: w4g64 and w4g128 sit a few MiB apart
                                 textposition=[("top right", "bottom right")[i % 2]
                                               for i in range(len(result.uniform))],
                                 name="uniform RTN", marker=dict(color=UNIFORM_COLOR, size=8)))
    if a.predicted_kl > 0:
        fig.add_trace(go.Scatter(x=[a.bytes / MiB], y=[a.predicted_kl], mode="markers", name="fitted recipe",
                                 marker=dict(color=FIT_COLOR, size=13, symbol="star")))
    fig.add_vline(x=result.budget_bytes / MiB, line=dict(color=BUDGET_COLOR, dash="dash"),
                  annotation_text="budget", annotation_position="top left")
    fig.update_xaxes(title="MiB of weights")
    fig.update_yaxes(title="predicted KL to the original (nats per token)", type="log")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, "Predicted cost over budgets (a projection from the sensitivity map, not a measurement)",
                   height=380)
