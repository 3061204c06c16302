"""The page: the panels assembled side by side, and how it is launched.

    settings column                  results column (tabs)
    ---------------                  ---------------------
    model, recipe (presets, with     Result (cards, samples, prompt box) · Plots · Hardware (projection)
    "Fit to hardware" under them),   · Download (the model in each format) · Compare · Sweep · History
    hardware, evaluation, run/cancel · How to read this;  raw report and log below

The HTTP API (gradio_client, /gradio_api/info) is what a script needs: run, cancel, ask, show_run,
check_recipe, history, export_csv, export_json, download_model. Every other listener only keeps the
page in step (forms, notes, plots) and is api_visibility="private": hidden and refused to clients.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from compressor.runs.limits import MAX_UPLOAD_BYTES
from compressor.runs.manager import JobManager
from compressor.runs.sweep_run import Sweeps
from ui.backend import make_managers
from ui.compare import compare_choices, compare_panel
from ui.export import ExportPanel, export_panel
from ui.files import AppFiles
from ui.fit import fit_panel, make_fit_manager
from ui.hardware import hardware_panel
from ui.history import history_panel
from ui.plots import plots_panel
from ui.results import results_panel
from ui.run import Follow, wire_run
from ui.session import wire_session
from ui.settings import settings_panel
from ui.sweep import sweep_panel
from ui.views import ReportViews
from ui.visitors import STORAGE_KEY, Sessions, browser_secret

STATIC = Path(__file__).resolve().parents[1] / "assets" / "static"
DELETE_CACHE = (1800, 3600)  # every 30 min, Gradio removes files it cached (uploads, downloads) over an hour old
MAX_UPLOAD = f"{MAX_UPLOAD_BYTES // 1024}kb"  # Gradio refuses a larger file before storing it

DOWNLOAD_TAB = "Download"  # the run on show's model in each export format (ui.export)
HEADER = ('<div class="lab-header"><h1>Compression Lab</h1><p>Compress a language model and compare it side by side '
          "with the original: generations, memory, speed and quality, for the hardware you choose.</p></div>")

HOW_TO_READ = """
**How to read this**

- *Weight memory* is the bytes of the model's parameters and buffers, measured after real packing
  (4-bit weights really take ~4 bits plus scales). *KV per token* is the cache each generated token
  adds. Lower is better for both.
- *Prefill / decode tokens/s* are measured on **this** machine (median of repeats). On a CPU, low-bit
  kernels may be slower than fp32: speed-ups appear where memory bandwidth is the limit (GPUs).
- *Perplexity* (lower is better) and *arithmetic accuracy* (exact match) are measured on bundled
  held-out data. *KL* is the mean KL divergence of the compressed model's next-token distribution
  from the original's on the same tokens, and *top-1 agreement* how often both pick the same next
  token: these see differences that perplexity hides. KL near 0 and agreement near 100 % mean the
  compressed model behaves like the original.
- An arithmetic change is only a difference when its *paired 95 % interval* (under the card) leaves
  out 0: a few dozen problems move by several points by chance.
- The **hardware panel is a projection** from a roofline model of the chosen profile (memory
  bandwidth and peak compute), not a measurement, unless the profile is *this machine*.
- Deltas are compressed minus baseline; green means better, red worse.
- A recipe of several stages (e.g. prune -> distil -> quantize) also gets a **per-stage table**: the
  quality after each stage and the change that stage caused, on the same tokens and problems.
- **Pruning** zeros stored densely save no memory or time by themselves (the report says so per
  module); compact 2:4 storage saves bytes, structured pruning saves bytes and time. Watch the
  arithmetic card: pruning can cost it far more than perplexity suggests.
"""


def build_app(manager: JobManager, ask_manager: JobManager | None = None,
              fit_manager: JobManager | None = None) -> gr.Blocks:
    """The whole page. `manager` runs compressions (and a sweep's cells); `ask_manager` answers the prompt box
    (target compressor.runs.ask:answer; None turns the prompt box off); `fit_manager` measures sensitivity
    maps for "Fit to hardware" (ui.fit.make_fit_manager; None leaves the panel out). The sweeps and the
    folders of downloads made here are closed by `stop`."""
    sessions, files, sweeps = Sessions(), AppFiles(), Sweeps(manager)
    with gr.Blocks(title="Compression Lab", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        visitor = gr.State(None)  # this session's visitor id (ui.visitors), read from the browser on load
        stored = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=browser_secret(manager.data_dir))
        run_id = gr.State(None)  # the run on show: cancel, the prompt box and re-projection act on it
        link = gr.Textbox(visible="hidden", elem_id="lab-link-query", render=False)
        raw = gr.JSON(label="Report", render=False)
        log = gr.Textbox(label="Log", lines=6, max_lines=20, interactive=False, render=False)
        gr.HTML(HEADER)
        with gr.Row(equal_height=False, elem_classes="lab-main"):
            with gr.Column(scale=2, min_width=300, elem_classes="lab-settings"):
                settings = settings_panel(demo, visitor, files, _fit_builder(fit_manager, visitor))
            with gr.Column(scale=3, min_width=300, elem_classes="lab-results"):
                with gr.Tabs() as tabs:
                    with gr.Tab("Result", id="result"):
                        results = results_panel(manager, ask_manager, run_id, visitor)
                        share_link = gr.Textbox(label="Link to this result (opens it again after a reload)",
                                                interactive=False, buttons=["copy"], elem_id="lab-share-link")
                    with gr.Tab("Plots", id="plots"):
                        plots = plots_panel()
                    with gr.Tab("Hardware", id="hardware"):
                        hardware = hardware_panel()
                    with gr.Tab(DOWNLOAD_TAB, id="download"):
                        export = export_panel(manager, run_id, visitor)
                    with gr.Tab("Compare", id="compare"):
                        compare_pick = compare_panel(manager, visitor)
                    views = ReportViews(results, plots, hardware, raw)
                    with gr.Tab("Sweep", id="sweep"):
                        sweep_panel(sweeps, visitor)
                    with gr.Tab("History", id="history"):
                        history = history_panel(demo, manager, visitor, settings.hardware, files)
                    with gr.Tab("How to read this", id="help"):
                        gr.Markdown(HOW_TO_READ)
                with gr.Accordion("Raw report (JSON) and log", open=False):
                    raw.render()
                    log.render()
        link.render()
        follow = Follow(run_id, settings.progress, settings.status, log, link, views)
        run_event = wire_run(settings, follow, manager, visitor, plots.show_projected)
        load = wire_session(demo, manager, settings, follow, visitor, stored, history.open_run, compare_pick,
                            plots.show_projected, share_link, sessions)
        link.change(results.share_state, [run_id, visitor], results.share, api_visibility="private")
        for event in (run_event, load):
            event.then(results.share_state, [run_id, visitor], results.share, api_visibility="private")
            event.then(history.refresh, history.inputs, history.outputs, api_visibility="private")
            event.then(compare_choices(manager), [visitor, compare_pick], compare_pick, api_visibility="private")
        _wire_downloads(tabs, link, run_event, export)
    demo.lab_owned = (sweeps, files, export)  # what stop() closes besides the managers
    return demo


def _wire_downloads(tabs: gr.Tabs, link: gr.Textbox, run_event, export: ExportPanel) -> None:
    """The Download tab builds the run on show's files (ui.export) when it is opened, and again, while it is
    open, when another run comes on show or a run ends: not after every run, since each export loads the
    model in the app's process."""
    open_ = gr.State(False)

    def on_tab(evt: gr.SelectData):
        return evt.value == DOWNLOAD_TAB

    def on_show(is_open: bool, rid: str | None, vid: str | None, request: gr.Request = None):
        return export.show(rid, vid, request) if is_open else [gr.update()] * len(export.outputs)

    tabs.select(on_tab, None, open_, api_visibility="private", show_progress="hidden").then(
        on_show, [open_, *export.inputs], export.outputs, api_visibility="private")
    for event in (link.change, run_event.then):
        event(on_show, [open_, *export.inputs], export.outputs, api_visibility="private")


def _fit_builder(fit_manager: JobManager | None, visitor: gr.State):
    """The "Fit to hardware" panel under the preset picker (ui.fit), given the settings it reads and fills."""
    if fit_manager is None:
        return None
    return lambda model, hardware, recipe, context, batch: fit_panel(fit_manager, model, hardware, recipe, visitor,
                                                                     context, batch)


def launch_kwargs() -> dict:
    """Theme and CSS (Gradio 6 takes them at launch)."""
    return {"theme": gr.themes.Soft(primary_hue="indigo"), "css_paths": [STATIC / "lab.css"],
            "max_file_size": MAX_UPLOAD}


def serve(data_dir: str | Path | None = None, *, host: str = "127.0.0.1", port: int | None = None,
          block: bool = True, quiet: bool = False,
          managers: tuple[JobManager, JobManager | None] | None = None) -> tuple[gr.Blocks, str, tuple]:
    """Builds and launches the app; returns (demo, local url, managers: run, prompt box, fit). With
    block=False (tests) the caller stops it with `stop(demo, managers)`. `managers` (run, prompt box or None)
    replace the ones made for `data_dir`; the fit jobs' manager keeps to a folder under the run manager's."""
    managers = managers or make_managers(data_dir)
    managers = (*managers[:2], make_fit_manager(managers[0].data_dir))
    demo = build_app(*managers)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                            **launch_kwargs())
    return demo, url, managers


def stop(demo: gr.Blocks, managers: tuple[JobManager, ...]) -> None:
    """Closes the page, its sweeps, its job managers and its folder of downloads; safe to call twice."""
    demo.close()
    sweeps, files, export = getattr(demo, "lab_owned", (None, None, None))
    if sweeps is not None:
        sweeps.shutdown()  # before the managers: a sweep cancels its cells through them
    for m in managers:
        if m is not None:
            m.shutdown()
    if files is not None:
        files.remove()
        export.close()
