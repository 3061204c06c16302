"""The export panel: a finished run's compressed model as compressed-tensors, GGUF or plain transformers, one
download button each, and beside each what the export kept exactly and what it did not.

    export = export_panel(manager, run_id, visitor)   # inside a tab or accordion of the page (ui/page.py)
    event.then(export.show, export.inputs, export.outputs, api_visibility="private")  # after a run is shown
    stop: export.close()                              # removes the panel's folder (also done at exit)

`show(run_id, visitor)` builds every format's file when the run is shown, not when a button is clicked: a
DownloadButton downloads the value it already holds, so the first click gets the file. Each note is the
export's own measured result (`ExportResult.summary()` and `written()`: per layer, lossless / rounded /
requantized / dense, the largest weight error); a format that cannot hold the model shows its refusal, which
names the format that can. Files live in one folder per app, a run's files are built once and reused, only
the last KEEP_RUNS runs keep theirs, a saved model over MAX_SOURCE_BYTES is not exported here (the note gives
the command line that does), and one export runs at a time.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from compressor.errors import LabError
from compressor.runs.store import SUCCEEDED
from ui.messages import guarded, public
from ui.records import has_saved_model, visible_run
from ui.visitors import owner_of

# format -> button label; the order of the buttons
FORMATS = {"compressed-tensors": "compressed-tensors (vLLM, transformers)", "gguf": "GGUF (llama.cpp, Ollama)",
           "transformers": "transformers (dense safetensors)"}
KEEP_RUNS = 3  # runs whose files stay in the folder at once (each up to a few times its model's size)
MAX_SOURCE_BYTES = 1 * 2**30  # a larger saved model is exported with the command line, not by the app
INTRO = ("Take the compressed model elsewhere. Each file is checked by its format's own reader; the note beside "
         "it says which layers it holds exactly and the largest weight error of the rest.")


@dataclass
class FormatFile:
    """One format's download for a run: the file (None when refused or not built) and the note shown beside it."""

    fmt: str
    path: str | None
    note: str


def _note(result) -> str:
    """Beside a button: what was written, how exactly, and what the format adds or leaves out."""
    lossless = "every weight bit-exact" if result.lossless else f"largest weight error {result.max_abs_err:.2g}"
    size = f"{result.bytes_written / 2**20:.1f} MiB"
    extra = [m for m in result.model_notes if not m.startswith("tokenizer")]
    return f"**{'lossless' if result.lossless else 'not lossless'}** ({lossless}; {size}): {result.written()}" + (
        "  \n" + "  \n".join(public(m) for m in extra) if extra else "")


class ExportFiles:
    """The panel's files: `root`/<run id>/<file> for each run exported, the last KEEP_RUNS runs kept."""

    def __init__(self, keep_runs: int = KEEP_RUNS, max_source_bytes: int = MAX_SOURCE_BYTES):
        self.root = Path(tempfile.mkdtemp(prefix="lab-model-exports-"))
        self.keep_runs, self.max_source_bytes = keep_runs, max_source_bytes
        self._built: OrderedDict[str, list[FormatFile]] = OrderedDict()
        self._lock = threading.Lock()  # one export at a time: each loads a model into this process
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)  # also at interpreter exit

    def close(self) -> None:
        """Removes the folder and everything in it."""
        self._finalizer()

    def for_run(self, run) -> list[FormatFile]:
        """Every format's file for a finished run with a saved model, built on the first call; LabError otherwise."""
        with self._lock:
            files = self._built.get(run.id)
            if files is not None and all(f.path is None or Path(f.path).is_file() for f in files):
                self._built.move_to_end(run.id)
                return files
            files = self._build(run)
            self._built[run.id] = files
            while len(self._built) > self.keep_runs:
                old, _ = self._built.popitem(last=False)
                shutil.rmtree(self.root / old, ignore_errors=True)
            return files

    def _build(self, run) -> list[FormatFile]:
        from compressor.export import ExportRefused, export_model
        from compressor.export.result import folder_bytes
        from compressor.models.loading import load_model

        if run.status != SUCCEEDED or not has_saved_model(run):
            raise LabError("this run has no compressed model on disk (it has not finished, failed, used bitsandbytes "
                           "layers, or its model was removed to save space): run it again to export it")
        source = Path(run.artifact_path)
        size = folder_bytes(source)
        if size > self.max_source_bytes:
            raise LabError(f"this run's model ({size / 2**30:.2f} GiB) is larger than the app exports "
                           f"({self.max_source_bytes / 2**30:.2f} GiB): on the lab's machine, run python -m compressor "
                           f"export --run {run.id} --format FORMAT --out DIR")
        folder = self.root / run.id
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        model, tokenizer = load_model(str(source), roots=[source], log=lambda m: None)
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in (run.model_spec or "model").split("/")[-1])
        files = []
        for fmt in FORMATS:
            out = folder / fmt
            try:
                result = export_model(model, tokenizer, fmt, out)
            except ExportRefused as e:
                files.append(FormatFile(fmt, None, f"**not available**: {public(e)}"))
                continue
            files.append(FormatFile(fmt, _pack(out, fmt, folder / f"{name}-{run.id}-{fmt}"), _note(result)))
            shutil.rmtree(out, ignore_errors=True)  # the archive holds it
        return files


def _pack(out: Path, fmt: str, stem: Path) -> str:
    """The download: GGUF's one file as it is (what llama.cpp opens), a folder zipped (stored: safetensors do not
    compress)."""
    from compressor.export import GGUF_FILE

    if fmt == "gguf":
        return str((out / GGUF_FILE).rename(stem.with_suffix(".gguf")))
    path = stem.with_suffix(".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(out.rglob("*")):
            if f.is_file():
                z.write(f, f"{stem.name}/{f.relative_to(out)}")
    return str(path)


@dataclass
class ExportPanel:
    show: object  # (run id, visitor) -> outputs: builds the run's files, fills the buttons and notes
    inputs: list
    outputs: list
    files: ExportFiles

    def close(self) -> None:
        self.files.close()


def export_panel(manager, run_id: gr.State, visitor: gr.State, files: ExportFiles | None = None) -> ExportPanel:
    """The download buttons and their notes; call inside the page's layout. `run_id` is the run on show,
    `visitor` the page's visitor id (ui.visitors): a visitor exports only their own runs and shared ones."""
    files = files or ExportFiles()
    gr.Markdown(INTRO, elem_classes="lab-note")
    status = gr.Markdown("", elem_id="lab-export-status")
    buttons, notes = [], []
    for fmt, label in FORMATS.items():
        with gr.Row(equal_height=False):
            buttons.append(gr.DownloadButton(label, size="sm", interactive=False, scale=1,
                                             elem_id=f"lab-export-{fmt}"))
            notes.append(gr.Markdown("", elem_id=f"lab-export-{fmt}-note"))

    @guarded
    def show(rid: str | None, vid: str | None, request: gr.Request = None) -> list:
        if not rid:
            return _updates("Open or run a model to export it.", [])
        run = visible_run(manager, rid, owner_of(vid, request))
        if run.status != SUCCEEDED:
            return _updates("The downloads appear when the run has finished.", [])
        try:
            built = files.for_run(run)
        except LabError as e:
            return _updates(public(e), [])
        return _updates("", built)

    return ExportPanel(show, [run_id, visitor], [status, *buttons, *notes], files)


def _updates(status: str, built: list[FormatFile]) -> list:
    """The panel's outputs: status line, one button per format (its file, or disabled), one note per format."""
    by_fmt = {f.fmt: f for f in built}
    buttons = [gr.update(value=by_fmt[fmt].path if fmt in by_fmt else None,
                         interactive=fmt in by_fmt and by_fmt[fmt].path is not None) for fmt in FORMATS]
    notes = [by_fmt[fmt].note if fmt in by_fmt else "" for fmt in FORMATS]
    return [status, *buttons, *notes]
