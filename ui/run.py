"""Run and cancel: the settings become a `RunRequest` (ui.request), submitted as a job
(`request.to_dict()` is the payload); the page follows its progress and shows its report when it ends.

Public endpoints: /run (streams progress, then the report in every panel) and /cancel.
"""

from __future__ import annotations

import html
import time

import gradio as gr

from compressor.errors import LabError
from compressor.progress import Progress
from compressor.runs.store import FINAL_STATUSES, SUCCEEDED
from ui import backend
from ui.request import build_request
from ui.settings import SettingsPanel, progress_html
from ui.views import ReportViews

POLL_S = 0.5  # how often a running job's progress reaches the page


def owner_of(request: gr.Request | None) -> str:
    """Who submitted: the browser session (a client's own session), so cancel stays with its owner."""
    return (getattr(request, "session_hash", None) or "anonymous") if request else "anonymous"


def describe_progress(event: dict | None, position: int | None, started: float) -> tuple[float, str]:
    """(fraction, text) of a job's latest progress event (a `Progress` as the manager keeps it)."""
    if position:
        return 0.0, f"Queued: position {position} (another run is ahead)"
    if not event:
        return 0.0, f"Starting the worker... {time.time() - started:.0f} s"
    p = Progress(**event)
    stage = p.stage + (f" ({p.stage_index + 1}/{p.n_stages})" if p.n_stages > 1 else "")
    if p.layer and p.n_layers:
        stage += f" · layer {p.layer}/{p.n_layers}"
    eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
    msg = f" · {p.message}" if p.message else ""
    return p.fraction, f"{100 * p.fraction:.0f} % · {stage}{eta}{msg}"


def wire_run(settings: SettingsPanel, views: ReportViews, log: gr.Textbox, manager, run_id: gr.State,
             projected: gr.Checkbox) -> gr.events.Dependency:
    """The run and cancel buttons' events; returns the run event (the history refreshes after it).
    `log` shows the run's log; `projected` is the plots panel's projected-speed box."""

    def run_clicked(model, recipe_text, hardware, show_projected, *eval_values, request: gr.Request = None):
        blank = views.unchanged()
        try:
            payload = build_request(model, recipe_text, hardware, *eval_values).to_dict()
            if backend.ZERO_GPU:
                yield [None, progress_html(0.05, "Running on ZeroGPU (no live progress)..."), "", ""] + blank
                rid = backend.run_inline_on_gpu(manager, payload, owner_of(request))
            else:
                rid = manager.submit(payload, owner_of(request))
        except LabError as e:
            gr.Warning(str(e))
            yield [None, progress_html(0, "Not started.", "failed"), f"**Cannot start:** {e}", ""] + blank
            return
        started = time.time()
        yield [rid, progress_html(0, "Queued..."), f"Run `{rid}` submitted.", ""] + blank
        since = 0
        while True:
            events = manager.events(rid, since=since, timeout=POLL_S)
            if events:
                since = events[-1]["index"] + 1
            state = manager.status(rid)
            if state in FINAL_STATUSES or state is None:
                break
            frac, text = describe_progress(manager.latest_progress(rid), manager.position(rid), started)
            yield [rid, progress_html(frac, text), f"Run `{rid}` is {state}.", gr.update()] + blank
        run = manager.get_run(rid)
        took = time.time() - started
        if run is None:
            yield [rid, progress_html(0, "Failed.", "failed"), f"**Run `{rid}` failed:** the run disappeared "
                   "from the store", ""] + blank
            return
        if run.status == SUCCEEDED and run.report:
            yield ([rid, progress_html(1, f"Done in {took:.0f} s.", "done"), f"Run `{rid}` finished in {took:.0f} s.",
                    run.log] + views.show(run, show_projected))
            return
        error = run.error or run.status
        if run.status != "cancelled":
            gr.Warning(f"Run {rid} {run.status}: {error}")
        yield [rid, progress_html(0, f"{run.status.title()}.", "failed"),
               f"**Run `{rid}` {run.status}:** {html.escape(error)}", run.log] + blank

    run_event = settings.run.click(
        run_clicked, [settings.model, settings.recipe, settings.hardware, projected] + settings.eval_inputs,
        [run_id, settings.progress, settings.status, log] + views.outputs,
        api_name="run", concurrency_limit=None, show_progress="hidden",
    )

    def cancel_clicked(rid: str | None, request: gr.Request = None):
        if not rid:
            return "Nothing is running."
        try:
            ok = manager.cancel(rid, owner=owner_of(request))
        except LabError as e:
            return f"Cannot cancel: {e}"
        return f"Cancelling run `{rid}`..." if ok else f"Run `{rid}` has already finished."

    settings.cancel.click(cancel_clicked, run_id, settings.status, api_name="cancel")
    return run_event
