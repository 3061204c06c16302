"""One run's report on show in every panel at once: opened once (`Report.from_dict`, which upgrades
reports stored by older versions), projected onto the hardware profile, context and batch the page
shows, then handed to each panel's `render`.

A projection is arithmetic on the report's footprint (`compressor.runs.projection.project_report`), so
changing the profile after a run redraws the hardware tab, the cards and the plots in well under a
second, with no new run.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.measure.hardware import THIS_MACHINE, HardwareProfile, get_profile
from compressor.runs.contract import Report
from compressor.runs.projection import project_report
from compressor.runs.store import RunRecord
from ui.hardware import HardwarePanel
from ui.messages import public
from ui.plots import PlotsPanel
from ui.records import report_of
from ui.results import ResultsPanel

# The profile of this machine as a worker probed it (the app's process never probes: a probe takes
# seconds of both cores). Any report projected onto "this-machine" carries it.
_this_machine: HardwareProfile | None = None


def remember_this_machine(report: Report) -> None:
    global _this_machine
    if report.projection is not None and report.projection.hardware.id == THIS_MACHINE:
        _this_machine = report.projection.hardware


def profile_for(hardware: str, report: Report) -> HardwareProfile:
    """The profile to project `report` onto; "this-machine" is the one a worker probed, never probed here."""
    if hardware != THIS_MACHINE:
        return get_profile(hardware)
    remember_this_machine(report)
    if _this_machine is None:
        raise LabError("this machine has not been measured yet: run once with the hardware profile 'This machine' "
                       "(the run probes it), then any report can be projected onto it")
    return _this_machine


def reprojected(report: Report, hardware: str | None, context: object = None, batch: object = None) -> Report:
    """`report` with its projection made for `hardware`, `context` and `batch` (each None: the run's own).
    The same report when nothing changes; LabError naming the problem otherwise."""
    own = report.projection
    hardware = hardware or (own.hardware.id if own is not None else report.request.hardware)
    context = report.request.projection_context if context in (None, "") else context
    batch = report.request.projection_batch if batch in (None, "") else batch
    for name, value in (("context", context), ("batch", batch)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise LabError(f"projection {name}={value!r} must be a whole number")
        if name == "context":
            context = value
        else:
            batch = value
    asked_context = own.context_clamped_from or own.context if own is not None else None
    if own is not None and own.hardware.id == hardware and asked_context == context and own.batch == batch:
        return report
    projection = project_report(report, profile_for(hardware, report), context, batch)
    return dataclasses.replace(report, projection=projection)


@dataclass
class ReportViews:
    """The components that show a report, in the order of the /run and /show_run endpoints' outputs:
    cards, samples, four plots, projection, details, the report as JSON."""

    results: ResultsPanel
    plots: PlotsPanel
    hardware: HardwarePanel
    raw: gr.JSON

    @property
    def outputs(self) -> list:
        return self.results.outputs + self.plots.outputs + self.hardware.outputs + [self.raw]

    def unchanged(self) -> list:
        return [gr.update()] * len(self.outputs)

    def render(self, report: Report, projected: bool) -> list:
        """Every panel's view of `report` (a streamed one names what is still to come: `report.pending`)."""
        return (self.results.render(report) + self.plots.render(report, projected)
                + self.hardware.render(report) + [report.to_dict()])

    def problem(self, text: str, stored: object = None) -> list:
        """The cards say what is wrong; the other panels keep what they show."""
        shown = f'<div class="lab-empty lab-report-problem">{html.escape(public(text), quote=False)}</div>'
        return [shown] + [gr.update()] * (len(self.outputs) - 2) + [stored]

    def show(self, run: RunRecord, projected: bool, hardware: str | None = None, context: object = None,
             batch: object = None) -> list:
        """Every panel's view of a finished run's report, projected as asked (None: as the run projected
        it); one that cannot be read or projected says so in the cards."""
        try:
            report = report_of(run)
            if report is None:
                raise LabError(f"run {run.id} has no report: it is {run.status}.")
            remember_this_machine(report)
            report = reprojected(report, hardware, context, batch)
        except LabError as e:
            return self.problem(str(e), run.report)
        return self.render(report, projected)
