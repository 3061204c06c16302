"""The "Fit to hardware" panel: a budget (average bits, GiB of weights, or the chosen hardware profile's memory
at a context and batch) -> a mixed-precision recipe in the editor, the predicted cost curve over budgets,
and the sensitivity heatmap. The recipe is an ordinary one: the page's Run button runs it like any other.

The first fit of a model runs a job (compressor.fit.job:fit_job, in a worker process of its own manager:
`make_fit_manager`) that measures the model's sensitivity map, cached in the data folder; the map comes
back to the page, which keeps it, so moving the budget afterwards re-allocates here in seconds, no job.

    panel = fit_panel(fit_manager, settings.model, settings.hardware, settings.recipe, visitor,
                      settings.projection_context, settings.projection_batch)

`samples` (optional) sets the calibration sequences of the map (default 16, compressor.fit.fitting).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from compressor.errors import LabError
from compressor.fit.budget import parse_budget
from compressor.fit.fitting import FitResult, fit_map
from compressor.fit.sensitivity import SensitivityMap
from compressor.runs.manager import JobManager
from compressor.runs.store import FINAL_STATUSES, SUCCEEDED
from ui.fit_plots import cost_curve, sensitivity_heatmap
from ui.messages import guarded, public
from ui.visitors import owner_of

FIT_TARGET = "compressor.fit.job:fit_job"
KINDS = ("average bits", "GiB of weights", "hardware memory")
POLL_S = 0.5
INTRO = ("**Fit to hardware.** Pick a budget; the lab measures how sensitive each layer is (once per model: "
         "one backward pass per calibration sequence) and gives every module the format that costs least for "
         "the bytes. The recipe lands in the editor above: read it, edit it, run it.")


def make_fit_manager(data_dir: str | Path, time_limit_s: float = 3600) -> JobManager:
    """The fit jobs' manager: a store of its own under the data folder (fits are not runs in the history)."""
    return JobManager(Path(data_dir) / "fit-jobs", target=FIT_TARGET, concurrency=1, time_limit_s=time_limit_s,
                      max_queued_per_owner=2)


@dataclass
class FitPanel:
    kind: gr.Radio
    bits: gr.Slider
    gib: gr.Slider
    context: gr.Number
    batch: gr.Number
    button: gr.Button
    status: gr.Markdown
    curve: gr.Plot
    heatmap: gr.Plot
    state: gr.State  # {"model": spec, "map": SensitivityMap dict} once a map is known


def budget_text(kind: str, bits: float, gib: float, hardware: str | None) -> str:
    """The panel's inputs as the budget `python -m compressor fit --budget` takes."""
    if kind == KINDS[1]:
        return f"{gib}GiB"
    if kind == KINDS[2]:
        return f"hardware:{hardware or 'this-machine'}"
    return f"{bits}bits"


def describe(result: FitResult) -> str:
    a = result.allocation
    s = html.escape(result.summary(), quote=False)
    if result.recipe is None:
        return s
    best = min(result.uniform, key=lambda u: abs(u["bytes"] - a.bytes), default=None)
    near = (f" Uniform {best['format']} at {best['bytes'] / 2**20:.1f} MiB is predicted at KL "
            f"{best['predicted_kl']:.4f}." if best else "")
    return f"{s}.{near} The recipe is in the editor (predictions, not measurements: run it to measure)."


def _render(smap: SensitivityMap, budget: str, context: int, batch: int) -> tuple[str, str, object, FitResult | None]:
    """(recipe text or "", status, curve figure or None, result) of `budget` on a known map."""
    try:
        result = fit_map(smap, parse_budget(budget, int(context), int(batch)))
    except LabError as e:
        return "", f"**Cannot fit:** {html.escape(public(e), quote=False)}", None, None
    return result.recipe_yaml, describe(result), cost_curve(result), result


def _gib_range(smap: SensitivityMap) -> dict:
    """The GiB slider over what this model can be made, floats at its own width."""
    from compressor.fit.allocator import cost_curve as curve

    pts = curve(smap, smap.model_float_bytes, points=2)
    lo, hi = pts[0][0] / 2**30, pts[-1][0] / 2**30
    step = max(10 ** (round(_log10(hi - lo)) - 2), 1e-4)
    return dict(minimum=round(lo, 6), maximum=round(hi, 6), step=step, value=round((lo + hi) / 2, 6))


def _log10(x: float) -> float:
    import math

    return math.log10(max(x, 1e-12))


def fit_panel(manager: JobManager, model: gr.Component, hardware: gr.Component, recipe: gr.Component,
              visitor: gr.State, context: gr.Component | None = None, batch: gr.Component | None = None,
              samples: int | None = None) -> FitPanel:
    """The panel's components and events; `recipe` is the page's recipe editor, which a fit fills."""
    with gr.Accordion("Fit to hardware", open=False, elem_id="lab-fit"):
        gr.Markdown(INTRO)
        kind = gr.Radio(list(KINDS), value=KINDS[0], label="Budget", elem_id="lab-fit-kind")
        bits = gr.Slider(2.3, 8.5, value=4.5, step=0.05, label="Average bits per weight (scales included)",
                         elem_id="lab-fit-bits")
        gib = gr.Slider(0.001, 64, value=0.5, step=0.001, label="GiB of weights", visible=False,
                        elem_id="lab-fit-gib")
        with gr.Row(visible=context is None):
            context = context or gr.Number(2048, label="Context (tokens)", precision=0, minimum=1)
            batch = batch or gr.Number(1, label="Batch", precision=0, minimum=1)
        button = gr.Button("Fit", elem_id="lab-fit-run")
        status = gr.Markdown(elem_id="lab-fit-status")
        curve = gr.Plot(label="Predicted cost over budgets", elem_id="lab-fit-curve")
        with gr.Accordion("Sensitivity map", open=False):
            heatmap = gr.Plot(label="Sensitivity per layer and format", elem_id="lab-fit-heatmap")
        state = gr.State(None)
    panel = FitPanel(kind, bits, gib, context, batch, button, status, curve, heatmap, state)
    _wire(panel, manager, model, hardware, recipe, visitor, samples)
    return panel


def _wire(p: FitPanel, manager: JobManager, model, hardware, recipe, visitor, samples: int | None) -> None:
    outputs = [recipe, p.status, p.curve, p.heatmap, p.state, p.gib]
    keep = gr.update()

    @guarded
    def fit_clicked(spec, kind, bits, gib, hw, context, batch, known, vid, request: gr.Request = None):
        spec = spec.strip() if isinstance(spec, str) else ""
        budget = budget_text(kind, bits, gib, hw)
        try:
            parse_budget(budget, int(context or 0), int(batch or 0))  # a bad budget fails before any job
        except (LabError, ValueError, TypeError) as e:
            yield keep, f"**Cannot fit:** {html.escape(public(e), quote=False)}", keep, keep, keep, keep
            return
        if known and known.get("model") == spec:  # the map is here: allocate at once
            smap = SensitivityMap.from_dict(known["map"])
            text, say, fig, _ = _render(smap, budget, context, batch)
            yield (text or keep), say, fig, keep, keep, keep
            return
        try:
            owner = owner_of(vid, request)
            payload = {"model": spec, "budget": budget, "context": int(context), "batch": int(batch)}
            rid = manager.submit(payload | ({"samples": samples} if samples else {}), owner)
        except LabError as e:
            yield keep, f"**Cannot start:** {html.escape(public(e), quote=False)}", keep, keep, keep, keep
            return
        started = time.time()
        while (state := manager.status(rid)) not in FINAL_STATUSES and state is not None:
            manager.touch(owner)
            ev = manager.latest_progress(rid) or {}
            said = f"{100 * ev.get('fraction', 0):.0f} % · {ev.get('message', '')}" if ev else "starting the worker"
            yield (keep, f"Measuring the sensitivity map of `{html.escape(spec)}` (once per model): {said} · "
                   f"{time.time() - started:.0f} s", keep, keep, keep, keep)
            manager.events(rid, timeout=POLL_S)
        run = manager.get_run(rid)
        if run is None or run.status != SUCCEEDED or not run.report:
            why = public(run.error if run is not None else "the fit job is no longer in its store")
            yield keep, f"**Fit {run.status if run else 'failed'}:** {html.escape(why, quote=False)}", *[keep] * 4
            return
        smap = SensitivityMap.from_dict(run.report["map"])
        text, say, fig, _ = _render(smap, budget, context, batch)
        yield ((text or keep), say, fig, sensitivity_heatmap(smap), {"model": spec, "map": run.report["map"]},
               gr.update(**_gib_range(smap)))

    inputs = [model, p.kind, p.bits, p.gib, hardware, p.context, p.batch, p.state, visitor]
    p.button.click(fit_clicked, inputs, outputs, api_visibility="private", concurrency_limit=None)

    @guarded
    def budget_moved(spec, kind, bits, gib, hw, context, batch, known):
        if not known or known.get("model") != (spec or "").strip():
            return keep, "Press **Fit** to measure this model's sensitivity map.", keep
        text, say, fig, _ = _render(SensitivityMap.from_dict(known["map"]), budget_text(kind, bits, gib, hw),
                                    context, batch)
        return (text or keep), say, (fig if fig is not None else keep)

    moved = [model, p.kind, p.bits, p.gib, hardware, p.context, p.batch, p.state]
    for slider in (p.bits, p.gib):
        slider.release(budget_moved, moved, [recipe, p.status, p.curve], api_visibility="private")

    def kind_changed(kind):
        return (gr.update(visible=kind == KINDS[0]), gr.update(visible=kind == KINDS[1]))

    p.kind.change(kind_changed, p.kind, [p.bits, p.gib], api_visibility="private").then(
        budget_moved, moved, [recipe, p.status, p.curve], api_visibility="private")
