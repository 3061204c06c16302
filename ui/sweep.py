"""The Sweep tab: many recipes (and models) in one click; the grid fills and the Pareto front grows as cells land.

    from compressor.runs.sweep_run import Sweeps

    sweeps = Sweeps(manager)                # the page's JobManager: cells are its jobs, `manager.concurrency` at a
                                            # time (Ray tasks instead when LAB_RAY_ADDRESS is set; LabError if that
                                            # Ray cannot be used, saying how to install or reach it)
    with gr.Tab("Sweep", id="sweep"):
        sweep_panel(sweeps, visitor)        # visitor: the page's gr.State of the visitor id (ui.visitors)
    ...
    sweeps.shutdown()                       # when the app stops, before manager.shutdown(): cancels running sweeps

Pick presets from the checklist and/or write more recipes as a YAML list, start: every cell is an ordinary
run of this visitor (it shows in History too), handed to the job queue a slot at a time, or to a Ray cluster
when LAB_RAY_ADDRESS is set. A timer redraws the progress line, the grid (one row per cell, each with a
link that opens it as a run: `?run=<id>`) and the Pareto front of the finished cells, projected onto the
chosen hardware profile (a new profile re-projects the stored reports; nothing runs again).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from compressor.engine.presets import list_presets
from compressor.errors import LabError
from compressor.measure.settings import DEFAULT_PRESET
from compressor.runs import format as f
from compressor.runs.store import RUNNING, SUCCEEDED
from compressor.runs.sweep import SweepSpec, parse_recipes
from compressor.runs.sweep_run import Sweeps, cells_progress
from ui.messages import guarded, public
from ui.pareto import QUALITY_AXES, X_AXES, pareto_plot, projected_decode
from ui.records import report_of
from ui.settings import hardware_choices
from ui.views import profile_for
from ui.visitors import owner_of

TICK_S = 1.0  # how often an open sweep redraws
DEFAULT_PICKS = ("int8", "w4-g128", "hqq-w4-g64")  # calibration-free: seconds each on the demo model
GRID_COLUMNS = ("#", "model", "recipe", "evaluation", "status", "weights", "KL", "top-1", "arithmetic",
                "decode tok/s (here)", "decode tok/s (profile)", "")
INTRO = ("Run many recipes at once: tick presets and/or list more recipes as YAML, then start. Each cell is a run of "
         "yours (History shows it too); the grid and the Pareto front fill as cells finish. The model's baseline is "
         "measured once and shared by every cell.")
YAML_HINT = ("# for example:\n# - {method: rtn, bits: 4, group_size: 64}\n"
             "# - name: hqq-w3\n#   stages: [{method: hqq, bits: 3, group_size: 64}]\n")


@dataclass
class SweepPanel:
    sweep_id: gr.State  # the sweep on show
    timer: gr.Timer
    grid: gr.HTML
    pareto: gr.Plot
    status: gr.Markdown


def sweep_panel(sweeps: Sweeps, visitor: gr.State) -> SweepPanel:
    """The "Sweep" tab's contents; call inside it. `visitor` is the page's visitor id (ui.visitors)."""
    gr.Markdown(INTRO, elem_classes="lab-note")
    with gr.Row():
        models = gr.Textbox("demo", label="Model(s), comma-separated", elem_id="lab-sweep-models", scale=2)
        evals = gr.Textbox(DEFAULT_PRESET, label="Evaluation: presets (quick,standard) or a YAML mapping",
                           elem_id="lab-sweep-eval", scale=2)
    hw = hardware_choices()
    hardware = gr.Dropdown(hw, value=hw[0][1], label="Hardware profile (each report's projection and the front)",
                           elem_id="lab-sweep-hardware")
    picks = gr.CheckboxGroup(list(list_presets()), value=list(DEFAULT_PICKS), label="Recipes: presets",
                             elem_id="lab-sweep-presets")
    more = gr.Code(YAML_HINT, language="yaml", label="More recipes: a YAML list (a preset, one stage, or a name "
                   "and its stages per entry; lines starting with # are left out)", elem_id="lab-sweep-yaml", lines=3)
    with gr.Row():
        start = gr.Button("Start sweep", variant="primary", elem_id="lab-sweep-start")
        cancel = gr.Button("Cancel sweep", variant="stop", elem_id="lab-sweep-cancel")
    status = gr.Markdown("", elem_id="lab-sweep-status")
    grid = gr.HTML("", elem_id="lab-sweep-grid")
    with gr.Row():
        quality = gr.Dropdown(list(QUALITY_AXES), value=next(iter(QUALITY_AXES)), label="Quality axis")
        x_axis = gr.Radio(list(X_AXES), value=X_AXES[1], label="x axis")
    pareto = gr.Plot(label="Pareto front of this sweep", elem_id="lab-sweep-pareto", show_label=False)
    sweep_id = gr.State(None)
    timer = gr.Timer(TICK_S, active=False)

    @guarded
    def on_start(vid, model_text, presets, yaml_text, eval_text, hw_id, request: gr.Request = None):
        owner = owner_of(vid, request)
        spec = SweepSpec.build(model_text, recipe_entries(presets, yaml_text), eval_text, hardware=hw_id)
        sid = sweeps.start(spec, owner)
        return sid, f"Sweep `{sid}` started: {len(spec.models) * len(spec.recipes) * len(spec.evals)} cells.", \
            gr.Timer(active=True)

    @guarded
    def redraw(sid, vid, hw_id, quality_axis, x, request: gr.Request = None):
        if not sid:
            return "", "", pareto_plot([], quality_axis, x), gr.Timer(active=False)
        sweep = sweeps.get(sid, viewer=owner_of(vid, request))
        if sweep is None:
            raise LabError(f"no sweep {str(sid)[:40]!r} of yours")
        cells = sweeps.cells(sid)
        progress = cells_progress(cells, sweep.slots)
        done = [(c.run, r) for c in cells if c.status == SUCCEEDED and (r := _report(c.run)) is not None]
        profile = _profile(hw_id, done)
        line = f"Sweep `{sid}` on {sweep.executor}: {progress.line()}."
        if sweep.error and progress.finished:
            line += f" {public(sweep.error)}"
        return line, grid_html(cells, profile), _pareto(done, quality_axis, x, profile), \
            gr.Timer(active=not progress.finished)

    @guarded
    def on_cancel(sid, vid, request: gr.Request = None):
        if not sid:
            raise LabError("no sweep on show: start one first")
        cancelled = sweeps.cancel(sid, owner=owner_of(vid, request))
        return f"Sweep `{sid}`: " + ("cancelling its queued and running cells..." if cancelled else "already over.")

    view = [sweep_id, visitor, hardware, quality, x_axis]
    outputs = [status, grid, pareto, timer]
    start.click(on_start, [visitor, models, picks, more, evals, hardware], [sweep_id, status, timer],
                api_visibility="private").then(redraw, view, outputs, api_visibility="private")
    # redraws every second: no "processing" overlay flashing over the grid each time
    timer.tick(redraw, view, outputs, api_visibility="private", show_progress="hidden")
    for comp in (hardware, quality, x_axis):
        comp.input(redraw, view, outputs, api_visibility="private", show_progress="hidden")
    cancel.click(on_cancel, [sweep_id, visitor], status, api_visibility="private")
    return SweepPanel(sweep_id, timer, grid, pareto, status)


def recipe_entries(presets: list[str] | None, yaml_text: str | None) -> list:
    """The ticked presets, then the YAML list's entries (read and checked by `parse_recipes`)."""
    written = yaml_text and any(line.strip() and not line.lstrip().startswith("#") for line in yaml_text.splitlines())
    entries = list(presets or []) + (parse_recipes(yaml_text) if written else [])
    if not entries:
        raise LabError("tick at least one preset or list recipes in the YAML box")
    return entries


def _report(run):
    try:
        return report_of(run)
    except LabError:  # an unreadable report: its row says the run succeeded, its figures stay empty
        return None


def _profile(hw_id: str | None, done: list):
    try:
        return profile_for(hw_id, done[0][1]) if (done and hw_id) else None
    except LabError:  # "this machine" before any cell measured it: each cell's own profile
        return None


def _pareto(done: list, quality_axis: str, x: str, profile):
    fig = pareto_plot(done, quality_axis, x, profile)
    title = fig.layout.title.text or ""
    fig.update_layout(title_text=title.replace("all finished runs", "this sweep's finished cells"))
    return fig


def grid_html(cells, profile) -> str:
    """One row per cell: where it stands, the compressed model's figures, a link that opens it as a run."""
    rows = []
    for c in cells:
        run = c.run
        report = _report(run) if run is not None and c.status == SUCCEEDED else None
        state = c.status
        if c.status == RUNNING and run is not None and (run.progress or {}).get("fraction") is not None:
            state = f"running {100 * run.progress['fraction']:.0f} %"
        figures = ["" for _ in range(6)]
        if report is not None:
            comp = report.compressed
            figures = [f.fmt_bytes(comp.weight_bytes), f.fmt_kl(comp.kld), f.fmt_pct(comp.top1_agreement), f.fmt_pct(comp.arithmetic_accuracy),
                       f.fmt_rate(comp.decode_tokens_per_s), f.fmt_rate(projected_decode(report, profile))]
        error = (run.error if run is not None else c.error) or ""
        link = f'<a href="?run={html.escape(c.run_id)}" target="_top">open</a>' if run is not None else ""
        cols = [str(c.index + 1), c.model.rsplit("/", 1)[-1], c.recipe_label, c.eval_label, state, *figures, link]
        title = f' title="{html.escape(public(error))}"' if error and c.status != SUCCEEDED else ""
        rows.append(f'<tr data-status="{html.escape(c.status)}"{title}>'
                    + "".join(f"<td>{html.escape(v) if i < len(cols) - 1 else v}</td>" for i, v in enumerate(cols))
                    + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in GRID_COLUMNS)
    return (f'<div style="overflow-x:auto"><table class="lab-compare lab-sweep-grid"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
