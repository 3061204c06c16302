"""The history panel: the visitor's own runs (kept across reloads by the browser's visitor id), the Pareto
plot over them, the gallery of runs visitors chose to share, exports (CSV, JSON) of their runs and their
compressed models to download.

A visitor lists, opens and downloads only their own runs and shared ones: everyone else's stay private.
Public endpoints: /history, /export_csv, /export_json, /download_model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.runs.contract import Report
from compressor.runs.format import is_number
from compressor.runs.store import SUCCEEDED, RunRecord
from ui.files import AppFiles
from ui.messages import guarded, public
from ui.names import run_choice, run_name
from ui.pareto import QUALITY_AXES, X_AXES, pareto_plot
from ui.records import has_saved_model, report_of, visible_run
from ui.views import profile_for
from ui.visitors import owner_of

HISTORY_LIMIT = 200
GALLERY_LIMIT = 100
HISTORY_COLUMNS = ["run", "status", "weights MiB", "weights x", "perplexity", "KL", "top-1 %", "arith %",
                   "decode tok/s", "id", "error"]
# A text cell starting with one of these runs as a formula when a spreadsheet opens the CSV (OWASP's
# "CSV injection"); model ids, recipe names and errors are typed by whoever used the page.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
EXPORTED = ("id", "status", "model_spec", "recipe", "hardware", "eval_settings", "created_at", "finished_at",
            "report", "error")
ZIPS_KEPT = 4  # model archives kept in the export folder at once (each a compressed model's size)


def _round(value: object, digits: int, scale: float = 1.0) -> float | None:
    """A table cell: rounded, or empty for anything that is not a finite number."""
    return round(value * scale, digits) if is_number(value) else None


def history_row(run: RunRecord) -> list:
    """One table row: the run's name, where it stands, the compressed model's headline figures."""
    try:
        report, problem = report_of(run), ""
    except LabError as e:
        report, problem = None, str(e)
    row = [run_name(run), run.status]
    if report is None:
        row += [None] * 7
    else:
        base, comp = report.baseline, report.compressed
        ratio = base.weight_bytes / comp.weight_bytes if base.weight_bytes and comp.weight_bytes else None
        row += [_round(comp.weight_bytes, 3, 1 / 2**20), _round(ratio, 2), _round(comp.perplexity, 3),
                _round(comp.kld, 5), _round(comp.top1_agreement, 1, 100), _round(comp.arithmetic_accuracy, 1, 100),
                _round(comp.decode_tokens_per_s, 1)]
    return row + [run.id, public(run.error or problem)[:160]]


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


def runs_json(runs: list[RunRecord]) -> str:
    return json.dumps([{k: getattr(r, k) for k in EXPORTED} for r in runs], indent=1)


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


class Exports:
    """Files a visitor downloads, in one folder of this app's files (ui.files, removed when the app stops):
    each visitor's CSV and JSON are rewritten in place, and only the last few model archives are kept."""

    def __init__(self, files: AppFiles) -> None:
        self.files = files  # held: the folder lives as long as this does
        self.root = files.folder("exports")

    def table(self, owner: str, runs: list[RunRecord], fmt: str) -> str:
        folder = self.root / hashlib.sha256(owner.encode()).hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        path = folder / f"compression-lab-runs.{fmt}"
        path.write_text(runs_csv(runs) if fmt == "csv" else runs_json(runs), encoding="utf-8")
        return str(path)

    def model_zip(self, run: RunRecord) -> str:
        zips = sorted(self.root.glob("compressed-*.zip"), key=lambda p: p.stat().st_mtime)
        for old in zips[: max(0, len(zips) - ZIPS_KEPT + 1)]:
            old.unlink(missing_ok=True)
        return shutil.make_archive(str(self.root / f"compressed-{run.id}"), "zip", root_dir=run.artifact_path)


@dataclass
class HistoryPanel:
    refresh: object  # (visitor, quality, x_axis, hardware, request) -> outputs: redraws the panel
    inputs: list
    outputs: list
    open_run: gr.Dropdown  # "Open a run": ui.page wires it to the panels above


def history_panel(demo: gr.Blocks, manager, visitor: gr.State, hardware: gr.Dropdown,
                  files: AppFiles) -> HistoryPanel:
    """The "History" tab's contents; call inside it. `hardware` is the settings' profile: the Pareto plot
    projects every run onto it; `files` the app's folder for the downloads."""
    exports = Exports(files)
    gr.Markdown("Your runs, kept for this browser (they come back after a reload). Open one to see it above and "
                "restore its settings.", elem_classes="lab-note")
    with gr.Row():
        open_run = gr.Dropdown([], label="Open a run", elem_id="lab-open-run", scale=3, allow_custom_value=True)
        refresh = gr.Button("Refresh", size="sm", scale=1, elem_id="lab-refresh")
    table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, label="My runs (newest first)",
                         elem_id="lab-history", max_height=420)
    with gr.Row():
        export_csv = gr.DownloadButton("Export CSV", size="sm", elem_id="lab-export-csv")
        export_json = gr.DownloadButton("Export JSON", size="sm", elem_id="lab-export-json")
    with gr.Row():
        quality = gr.Dropdown(list(QUALITY_AXES), value=next(iter(QUALITY_AXES)), label="Quality axis")
        x_axis = gr.Radio(list(X_AXES), value=X_AXES[0], label="x axis")
    pareto = gr.Plot(label="Pareto", elem_id="lab-pareto", show_label=False)
    gallery = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True, max_height=320,
                           label="Shared gallery: runs their owners chose to share (open one above)",
                           elem_id="lab-gallery")
    with gr.Row():
        model_pick = gr.Dropdown([], label="Download a compressed model (.zip)", allow_custom_value=True)
    model_file = gr.File(label="Compressed model (.zip)", interactive=False)

    def my_runs(owner: str) -> list[RunRecord]:
        return manager.list_runs(owner=owner, limit=HISTORY_LIMIT)

    @guarded
    def redraw(vid: str | None, quality_axis: str, x: str, hw: str | None, request: gr.Request = None):
        owner = owner_of(vid, request)
        runs = my_runs(owner)
        shared = [r for r in manager.list_runs(shared=True, limit=GALLERY_LIMIT) if r.owner != owner]
        reports = finished_reports(runs)
        try:
            profile = profile_for(hw, reports[0][1]) if (reports and hw) else None
        except LabError:  # "this machine" before any run measured it: each run's own profile
            profile = None
        choices = [run_choice(r) for r in runs] + [(f"{label} (shared)", rid) for label, rid in map(run_choice, shared)]
        return (history_rows(runs), gr.update(choices=choices), pareto_plot(reports, quality_axis, x, profile),
                history_rows(shared),
                gr.update(choices=[run_choice(r) for r in runs if r.status == SUCCEEDED and has_saved_model(r)]),
                exports.table(owner, runs, "csv"), exports.table(owner, runs, "json"))

    inputs = [visitor, quality, x_axis, hardware]
    outputs = [table, open_run, pareto, gallery, model_pick, export_csv, export_json]
    refresh.click(redraw, inputs, outputs, api_name="history")
    for comp in (quality, x_axis):
        comp.input(redraw, inputs, outputs, api_visibility="private")

    @guarded
    def on_export(fmt: str, vid: str | None, request: gr.Request = None) -> str:
        owner = owner_of(vid, request)
        return exports.table(owner, my_runs(owner), fmt)

    def export_csv_fn(vid: str | None, request: gr.Request = None) -> str:
        return on_export("csv", vid, request)

    def export_json_fn(vid: str | None, request: gr.Request = None) -> str:
        return on_export("json", vid, request)

    export_csv.click(export_csv_fn, visitor, export_csv, api_name="export_csv")
    export_json.click(export_json_fn, visitor, export_json, api_name="export_json")

    @guarded
    def on_model_pick(rid: str | None, vid: str | None, request: gr.Request = None) -> str:
        run = visible_run(manager, rid, owner_of(vid, request))
        if not has_saved_model(run):
            raise LabError(f"run {rid} has no compressed model on disk (none was saved, or it was removed to save "
                           "space): run it again to get one")
        return exports.model_zip(run)

    model_pick.input(on_model_pick, [model_pick, visitor], model_file, api_name="download_model")
    return HistoryPanel(redraw, inputs, outputs, open_run)
