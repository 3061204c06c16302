"""One run's report on show in every panel at once: opened once (`Report.from_dict`, which upgrades
reports stored by older versions), then handed to each panel's `render`."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.runs.store import RunRecord
from ui.hardware import HardwarePanel
from ui.plots import PlotsPanel
from ui.records import report_of
from ui.results import ResultsPanel


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

    def show(self, run: RunRecord, projected: bool) -> list:
        """Every panel's view of a finished run's report; one that cannot be read says so in the cards."""
        try:
            report = report_of(run)
            if report is None:
                raise LabError(f"run {run.id} has no report: it is {run.status}.")
        except LabError as e:
            problem = f'<div class="lab-empty lab-report-problem">{html.escape(str(e))}</div>'
            return [problem] + [gr.update()] * (len(self.outputs) - 2) + [run.report]
        return (self.results.render(report) + self.plots.render(report, projected) + self.hardware.render(report)
                + [report.to_dict()])
