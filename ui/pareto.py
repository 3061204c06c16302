"""The Pareto plot over finished runs: weight memory or projected decode speed against a quality figure,
with the front of the runs no other run beats on both.

Speed is compared on one hardware profile at a time: every run's stored report is projected onto the
chosen profile (`project_report`, arithmetic on its footprint, no model), so a front never mixes runs
projected for different machines. The title names both axes and the profile.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from compressor.errors import LabError
from compressor.measure.hardware import HardwareProfile
from compressor.runs import format as f
from compressor.runs.contract import Report
from compressor.runs.projection import project_report
from compressor.runs.store import RunRecord
from ui.names import run_name
from ui.plots import BASE_COLOR, COMP_COLOR, MiB, empty, layout, scaled

# quality axis label -> the compressed Measurement's attribute
QUALITY_AXES = {
    "KL to baseline (lower better)": "kld",
    "Perplexity (lower better)": "perplexity",
    "Top-1 agreement (higher better)": "top1_agreement",
    "Arithmetic accuracy (higher better)": "arithmetic_accuracy",
}
X_AXES = ("Weight memory", "Projected decode tokens/s")


def projected_decode(report: Report, hardware: HardwareProfile | None) -> float | None:
    """The compressed model's decode tokens/s on `hardware` (None: the run's own profile), at the run's
    projection context and batch; None when the report cannot be projected."""
    if hardware is None or (report.projection is not None and report.projection.hardware.id == hardware.id):
        proj = report.projection
    else:
        try:
            proj = project_report(report, hardware, report.request.projection_context,
                                  report.request.projection_batch)
        except LabError:
            return None
    return proj.compressed.decode_tokens_per_s if proj is not None else None


def pareto_plot(runs: list[tuple[RunRecord, Report]], quality: str, x_axis: str,
                hardware: HardwareProfile | None = None, selected: list[str] | None = None) -> go.Figure:
    """Memory (or decode speed projected on `hardware`) against quality over finished runs; the front drawn."""
    attr = QUALITY_AXES.get(quality, "kld")
    projected = x_axis.startswith("Projected")
    pts = []
    for run, rep in runs:
        y = getattr(rep.compressed, attr)
        x = projected_decode(rep, hardware) if projected else scaled(rep.compressed.weight_bytes, 1 / MiB)
        if not (f.is_number(x) and f.is_number(y)):  # NaN/inf cannot be placed, and NaN breaks every comparison
            continue
        pts.append((x, y, run.id, run_name(run)))
    where = hardware.name if hardware is not None else "each run's own profile"
    xt = f"Decode tokens/s on {where} (projection)" if projected else "Weight memory (MiB)"
    yt = quality.split(" (")[0]
    title = f"{yt} vs {xt.split(' (')[0].lower()}" + (f" on {where}" if projected else "") + ", all finished runs"
    fig = go.Figure()
    if not pts:
        empty(fig, "No finished runs with these numbers yet")
        return layout(fig, title, height=300)
    sel = set(selected or [])
    fig.add_scatter(
        x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="runs",
        text=[p[3] for p in pts], hovertemplate="%{text}<br>x=%{x:.3g}<br>y=%{y:.4g}<extra></extra>",
        marker=dict(size=[14 if p[2] in sel else 9 for p in pts],
                    color=[COMP_COLOR if p[2] in sel else BASE_COLOR for p in pts]),
    )
    front = pareto_front(pts, lower_x=not projected, lower_y="lower" in quality)
    fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                    line=dict(color="#16a34a", dash="dot"))
    return layout(fig, title, height=380, xaxis_title=xt, yaxis_title=quality, showlegend=True,
                  legend=dict(orientation="h", y=-0.25))


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
