"""Run and cancel: the settings become a `RunRequest` (ui.request), submitted as a job owned by the
visitor (ui.visitors); the page follows its progress, shows its figures as they are measured, and its
whole report when it ends.

Public endpoints: /run (streams progress, then the report in every panel) and /cancel (this visitor's
run on show).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.progress import Progress
from compressor.runs.contract import Report
from compressor.runs.store import CANCELLED, FINAL_STATUSES, SUCCEEDED
from ui import backend
from ui.messages import guarded, public
from ui.request import build_request, preflight_warnings
from ui.settings import SettingsPanel, progress_html
from ui.views import ReportViews
from ui.visitors import owner_of

POLL_S = 0.5  # how often a running job's progress reaches the page


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


@dataclass
class Follow:
    """What following a run updates, in the order of its outputs: the run on show, the progress bar, the
    status line, the log, the share link's query, then every report panel."""

    run_id: gr.State
    progress: gr.HTML
    status: gr.Markdown
    log: gr.Textbox
    link: gr.Textbox
    views: ReportViews

    @property
    def outputs(self) -> list:
        return [self.run_id, self.progress, self.status, self.log, self.link] + self.views.outputs

    def follow(self, manager, rid: str, projected: bool, view: tuple = (None, None, None),
               note: str = "") -> Iterator[list]:
        """Yields outputs while run `rid` goes on, then its report (or why there is none). `view` is the
        (hardware, context, batch) to project a finished report onto (None: the run's own); `note` follows
        the status line (what the preflight said). It says nothing about the visitor being here: the
        generator outlives a closed tab (ui.session's timer says it, from the browser)."""
        blank = self.views.unchanged()
        link = f"?run={rid}"
        started = time.time()
        since, shown = 0, None
        while True:
            events = manager.events(rid, since=since, timeout=POLL_S)
            if events:
                since = events[-1]["index"] + 1
            state = manager.status(rid)
            if state in FINAL_STATUSES or state is None:
                break
            frac, text = describe_progress(manager.latest_progress(rid), manager.position(rid), started)
            panels, shown = self._partial(manager, rid, projected, shown)
            yield [rid, progress_html(frac, text), f"Run `{rid}` is {state}.{note}", gr.update(), link] + panels
        run = manager.get_run(rid)
        if run is None:
            yield [rid, progress_html(0, "Failed.", "failed"), f"**Run `{rid}` failed:** the run is no longer in the "
                   "store", "", link] + blank
            return
        took = (run.finished_at - run.started_at) if run.finished_at and run.started_at else time.time() - started
        if run.status == SUCCEEDED and run.report:
            yield ([rid, progress_html(1, f"Done in {took:.0f} s.", "done"),
                    f"Run `{rid}` finished in {took:.0f} s.{note}", public(run.log), link]
                   + self.views.show(run, projected, *view))
            return
        error = public(run.error or run.status)
        if run.status != CANCELLED:
            gr.Warning(f"Run {rid} {run.status}: {error}")
        yield [rid, progress_html(0, f"{run.status.title()}.", "failed"),
               f"**Run `{rid}` {run.status}:** {html.escape(error, quote=False)}", public(run.log), link] + blank


    def _partial(self, manager, rid: str, projected: bool, shown: tuple | None) -> tuple[list, tuple | None]:
        """Every panel's view of the run's newest partial report (quality first, then speed), or unchanged
        panels when nothing new came; and what is now shown (its pending list)."""
        partial = manager.partial_report(rid)
        key = tuple(partial.get("pending") or ()) if partial else None
        if partial is None or key == shown:
            return self.views.unchanged(), shown
        try:
            return self.views.render(Report.from_dict(partial), projected), key
        except (LabError, TypeError, ValueError, KeyError):  # an odd partial: the final report will tell
            return self.views.unchanged(), shown


def wire_run(settings: SettingsPanel, follow: Follow, manager, visitor: gr.State,
             projected: gr.Checkbox) -> gr.events.Dependency:
    """The run and cancel buttons' events; returns the run event (the history refreshes after it)."""

    @guarded
    def run_clicked(model, recipe_text, hardware, show_projected, ppl_tokens, context, arithmetic_samples,
                    max_new_tokens, projection_context, projection_batch, evaluation, vid, request: gr.Request = None):
        blank = follow.views.unchanged()
        try:
            owner = owner_of(vid, request)
            req = build_request(model, recipe_text, hardware, ppl_tokens, context, arithmetic_samples,
                                max_new_tokens, projection_context=projection_context,
                                projection_batch=projection_batch, evaluation=evaluation)
            notes = preflight_warnings(req)  # the recipe on the model's shapes: refused now, not after loading
            payload = req.to_dict()
            if backend.ZERO_GPU:
                yield [None, progress_html(0.05, "Running on ZeroGPU (no live progress)..."), "", "", ""] + blank
                rid = backend.run_inline_on_gpu(manager, payload, owner)
            else:
                rid = manager.submit(payload, owner)
        except LabError as e:
            gr.Warning(public(e))
            why = html.escape(public(e), quote=False)
            yield [gr.update(), progress_html(0, "Not started.", "failed"), f"**Cannot start:** {why}", gr.update(),
                   gr.update()] + blank
            return
        said = "".join(f"\n\n- {html.escape(public(n), quote=False)}" for n in notes[:4])
        yield [rid, progress_html(0, "Queued..."), f"Run `{rid}` submitted.{said}", "", f"?run={rid}"] + blank
        yield from follow.follow(manager, rid, show_projected, note=said)

    inputs = ([settings.model, settings.recipe, settings.hardware, projected] + settings.eval_inputs
              + [settings.projection_context, settings.projection_batch, settings.evaluation, visitor])
    run_event = settings.run.click(run_clicked, inputs, follow.outputs, api_name="run", concurrency_limit=None,
                                   show_progress="hidden")

    @guarded
    def cancel_clicked(rid: str | None, vid: str | None, request: gr.Request = None) -> str:
        if not rid:
            return "Nothing is running."
        try:
            ok = manager.cancel(rid, owner=owner_of(vid, request))
        except LabError as e:
            return f"**Cannot cancel:** {html.escape(public(e), quote=False)}"
        if not ok:
            return f"Run `{rid}` has already finished."
        run = manager.get_run(rid)
        if run is not None and run.status in FINAL_STATUSES:  # a queued run ends at once: say so, as the
            # follow stream's last line does, so whichever of the two answers lands last the line is right
            return f"**Run `{rid}` {run.status}:** {html.escape(public(run.error or run.status), quote=False)}"
        return f"Cancelling run `{rid}`..."

    settings.cancel.click(cancel_clicked, [follow.run_id, visitor], settings.status, api_name="cancel",
                          concurrency_limit=None)
    return run_event
