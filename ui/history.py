"""The history panel: every run in a table, a few side by side, the Pareto plot over finished runs,
exports (CSV, JSON), a past run shown in the panels above, and a compressed model to download.

Public endpoints: /history, /show_run, /export_csv, /export_json, /download_model.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from compressor.errors import LabError
from compressor.runs.contract import Report
from compressor.runs.format import is_number
from compressor.runs.store import SUCCEEDED, RunRecord
from ui.plots import QUALITY_AXES, X_AXES, pareto_plot
from ui.recipes import stored_recipe_label
from ui.records import has_saved_model, report_of
from ui.views import ReportViews

HISTORY_LIMIT = 200
HISTORY_COLUMNS = ["run", "finished", "status", "model", "recipe", "hardware", "weights MiB", "weights x",
                   "perplexity", "KL", "top-1 %", "arith %", "decode tok/s", "error"]
# A text cell starting with one of these runs as a formula when a spreadsheet opens the CSV (OWASP's
# "CSV injection"); model ids, recipe names and errors are typed by whoever used the page.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
EXPORTED = ("id", "status", "model_spec", "recipe", "hardware", "eval_settings", "created_at", "finished_at",
            "report", "error")


def _round(value: object, digits: int, scale: float = 1.0) -> float | None:
    """A table cell: rounded, or empty for anything that is not a finite number."""
    return round(value * scale, digits) if is_number(value) else None


def history_row(run: RunRecord) -> list:
    """One table row: what was asked, where it stands, the compressed model's headline figures."""
    try:
        report, problem = report_of(run), ""
    except LabError as e:
        report, problem = None, str(e)
    t = run.finished_at or run.created_at
    row = [run.id, time.strftime("%m-%d %H:%M", time.localtime(t)) if t else "", run.status, run.model_spec,
           stored_recipe_label(run.recipe), run.hardware]
    if report is None:
        row += [None] * 7
    else:
        base, comp = report.baseline, report.compressed
        ratio = base.weight_bytes / comp.weight_bytes if base.weight_bytes and comp.weight_bytes else None
        row += [_round(comp.weight_bytes, 3, 1 / 2**20), _round(ratio, 2), _round(comp.perplexity, 3),
                _round(comp.kld, 5), _round(comp.top1_agreement, 1, 100), _round(comp.arithmetic_accuracy, 1, 100),
                _round(comp.decode_tokens_per_s, 1)]
    return row + [(run.error or problem)[:160]]


def history_rows(runs: list[RunRecord]) -> list[list]:
    return [history_row(r) for r in runs]


def _csv_cell(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def runs_csv(runs: list[RunRecord]) -> str:
    """The history table as CSV, text cells that a spreadsheet would run as formulas neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows([_csv_cell(v) for v in row] for row in history_rows(runs))
    return buf.getvalue()


def finished_reports(runs: list[RunRecord]) -> list[tuple[RunRecord, Report]]:
    """(run, report) of the runs whose report opens (an unreadable one is named in its table row)."""
    out = []
    for run in runs:
        try:
            report = report_of(run)
        except LabError:
            continue
        if report is not None:
            out.append((run, report))
    return out


@dataclass
class HistoryPanel:
    refresh: object  # (selected, quality, x_axis) -> outputs: redraws the panel
    inputs: list
    outputs: list


def history_panel(demo: gr.Blocks, manager, views: ReportViews, run_id: gr.State,
                  projected: gr.Checkbox) -> HistoryPanel:
    """The "History" tab's contents; call inside it. Picking a run shows it in `views`."""
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm")
        export_csv = gr.DownloadButton("Export CSV", size="sm")
        export_json = gr.DownloadButton("Export JSON", size="sm")
    table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, label="Runs (newest first)",
                         elem_id="lab-history")
    compare_pick = gr.Dropdown([], multiselect=True, label="Pick runs to compare")
    compare_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, label="Selected runs")
    with gr.Row():
        quality = gr.Dropdown(list(QUALITY_AXES), value=next(iter(QUALITY_AXES)), label="Quality axis")
        x_axis = gr.Radio(list(X_AXES), value=X_AXES[0], label="x axis")
    pareto = gr.Plot(label="Pareto")
    with gr.Row():
        show_run = gr.Dropdown([], label="Show a run's results above")
        model_pick = gr.Dropdown([], label="Download a compressed model")
    model_file = gr.File(label="Compressed model (.zip)", interactive=False)

    def all_runs() -> list[RunRecord]:
        return manager.list_runs(limit=HISTORY_LIMIT)

    def redraw(selected, quality_axis, x):
        runs = all_runs()
        ids = [r.id for r in runs]
        selected = [s for s in (selected or []) if s in ids]
        return (history_rows(runs), gr.update(choices=ids, value=selected),
                history_rows([r for r in runs if r.id in selected]),
                pareto_plot(finished_reports(runs), quality_axis, x, selected),
                gr.update(choices=[r.id for r in runs if r.status == SUCCEEDED]),
                gr.update(choices=[r.id for r in runs if has_saved_model(r)]))

    inputs = [compare_pick, quality, x_axis]
    outputs = [table, compare_pick, compare_table, pareto, show_run, model_pick]
    refresh.click(redraw, inputs, outputs, api_name="history")
    demo.load(redraw, inputs, outputs, api_visibility="private")
    for comp in (compare_pick, quality, x_axis):
        comp.input(redraw, inputs, outputs, api_visibility="private")

    def on_show_run(rid: str | None, show_projected: bool):
        run = manager.get_run(rid) if rid else None
        if run is None or not run.report:
            return [gr.update()] * (1 + len(views.outputs))
        return [rid] + views.show(run, show_projected)

    show_run.input(on_show_run, [show_run, projected], [run_id] + views.outputs, api_name="show_run")

    export_dir = Path(tempfile.mkdtemp(prefix="lab-export-"))

    def on_export(fmt: str) -> str:
        runs = all_runs()
        path = export_dir / f"compression-lab-runs.{fmt}"
        if fmt == "csv":
            path.write_text(runs_csv(runs), encoding="utf-8")
        else:
            path.write_text(json.dumps([{k: getattr(r, k) for k in EXPORTED} for r in runs], indent=1),
                            encoding="utf-8")
        return str(path)

    export_csv.click(lambda: on_export("csv"), None, export_csv, api_name="export_csv")
    export_json.click(lambda: on_export("json"), None, export_json, api_name="export_json")

    def on_model_pick(rid: str | None) -> str:
        run = manager.get_run(rid) if rid else None
        if run is None or not has_saved_model(run):
            raise gr.Error(f"Run {rid} has no compressed model on disk (none was saved, or it was "
                           "removed to save space).", print_exception=False)
        return shutil.make_archive(str(export_dir / f"compressed-{rid}"), "zip", root_dir=run.artifact_path)

    model_pick.input(on_model_pick, model_pick, model_file, api_name="download_model")
    return HistoryPanel(redraw, inputs, outputs)
