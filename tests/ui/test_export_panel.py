"""The export panel (ui/export.py) as plain functions: a shown run's files are built when it is shown (so a
DownloadButton's first click downloads them), each note is the export's own measured result, a refusal names
the format that can, visitors export only runs they may see, and the files stay bounded in one folder."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import gradio as gr
import pytest

from ui.export import FORMATS, ExportFiles, export_panel
from ui.visitors import new_visitor_id

OWNER, OTHER = new_visitor_id(), new_visitor_id()


class StoreManager:
    """What the panel asks of a JobManager: get_run(id, viewer=) over a run store."""

    def __init__(self, store):
        self.store = store

    def get_run(self, run_id, viewer=None):
        run = self.store.get_run(run_id)
        return run if run is not None and (viewer is None or run.owner == viewer or run.shared) else None


@pytest.fixture(scope="module")
def manager(demo_run, tmp_path_factory):
    """Runs of OWNER: the demo run (RTN w4-g128, its saved model), a 3-bit run, one whose model was removed, one
    still running; and a private run of OTHER."""
    import compressor
    from compressor.engine.serialize import save_compressed
    from compressor.models.loading import load_model
    from compressor.runs.store import RUNNING, SUCCEEDED, RunStore

    root = tmp_path_factory.mktemp("export-panel")
    model, tokenizer = load_model("demo")
    model, creport = compressor.compress(model, {"stages": [{"method": "rtn", "bits": 3, "group_size": 32}]})
    save_compressed(model, tokenizer, root / "w3")
    store = RunStore(root / "data")
    runs = {"kept": (OWNER, SUCCEEDED, str(demo_run.artifact_dir)), "w3": (OWNER, SUCCEEDED, str(root / "w3")),
            "gone": (OWNER, SUCCEEDED, None), "busy": (OWNER, RUNNING, None),
            "theirs": (OTHER, SUCCEEDED, str(demo_run.artifact_dir))}
    for rid, (owner, status, artifact) in runs.items():
        store.create_run(owner, demo_run.payload, run_id=rid)
        store.update_run(rid, status=status, artifact_path=artifact, finished_at=time.time())
    yield StoreManager(store)
    store.close()


@pytest.fixture(scope="module")
def panel(manager):
    with gr.Blocks():
        p = export_panel(manager, gr.State(None), gr.State(None))
    yield p
    p.close()


def _shown(panel, rid, visitor=OWNER):
    """(status, {fmt: (file or None, interactive)}, {fmt: note}) as `show` fills the panel."""
    out = panel.show(rid, visitor)
    assert len(out) == len(panel.outputs) == 1 + 2 * len(FORMATS)
    n = len(FORMATS)
    buttons = {fmt: (u["value"], u["interactive"]) for fmt, u in zip(FORMATS, out[1:1 + n], strict=True)}
    return out[0], buttons, dict(zip(FORMATS, out[1 + n:], strict=True))


def _result_in_zip(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/export.json"))
        return json.loads(z.read(name))


def test_files_are_ready_when_the_run_is_shown_and_notes_are_the_exports_results(panel):
    import gguf

    from compressor.export.result import ExportResult, TensorNote

    status, buttons, notes = _shown(panel, "kept")
    assert status == ""
    for fmt, (path, interactive) in buttons.items():  # a value before any click: the first click downloads it
        assert interactive and Path(path).is_file() and Path(path).stat().st_size > 0, fmt
        assert Path(path).parent.parent == panel.files.root  # in the panel's one folder
    for fmt in ("compressed-tensors", "transformers"):
        d = _result_in_zip(buttons[fmt][0])
        result = ExportResult(fmt=d["fmt"], path=None, notes=[TensorNote(**{**n, "sqnr_db": float(n["sqnr_db"])})
                                                               for n in d["notes"]], model_notes=d["model_notes"])
        assert result.written() in notes[fmt]
        assert notes[fmt].startswith("**lossless**" if d["lossless"] else "**not lossless**")
    assert "pack-quantized int4 group 128 asym lossless" in notes["compressed-tensors"]
    # GGUF: the note says Q4_1 (fp16 min, rounded), and gguf's own reader finds Q4_1 tensors in the file
    assert notes["gguf"].startswith("**not lossless**") and "Q4_1 rounded" in notes["gguf"]
    types = {t.tensor_type.name for t in gguf.GGUFReader(buttons["gguf"][0]).tensors if t.name.startswith("blk.")}
    assert "Q4_1" in types
    # shown again: the same files, not built again
    mtimes = {p: Path(p).stat().st_mtime_ns for p, _ in buttons.values()}
    assert {p: Path(p).stat().st_mtime_ns for p, _ in _shown(panel, "kept")[1].values()} == mtimes


def test_a_refused_format_names_the_one_that_can(panel):
    status, buttons, notes = _shown(panel, "w3")
    assert buttons["gguf"] == (None, False)
    assert notes["gguf"].startswith("**not available**") and "3-bit" in notes["gguf"]
    assert "export to compressed-tensors" in notes["gguf"]
    assert buttons["compressed-tensors"][1] and "pack-quantized int3" in notes["compressed-tensors"]


@pytest.mark.parametrize("rid,visitor,needle", [
    ("gone", OWNER, "has no compressed model on disk"),
    ("busy", OWNER, "when the run has finished"),
    (None, OWNER, "Open or run a model"),
])
def test_runs_without_files_say_why(panel, rid, visitor, needle):
    status, buttons, notes = _shown(panel, rid, visitor)
    assert needle in status
    assert all(b == (None, False) for b in buttons.values()) and not any(notes.values())


def test_another_visitors_private_run_is_not_exported(panel):
    with pytest.raises(gr.Error, match="is yours or shared"):
        panel.show("theirs", OWNER)


def test_bounds_keep_the_last_runs_and_refuse_large_models(manager, tmp_path):
    with gr.Blocks():
        small = export_panel(manager, gr.State(None), gr.State(None), files=ExportFiles(keep_runs=1))
    try:
        first = _shown(small, "kept")[1]["compressed-tensors"][0]
        _shown(small, "w3")
        assert not Path(first).exists() and [p.name for p in small.files.root.iterdir()] == ["w3"]
    finally:
        small.close()
    assert not small.files.root.exists()  # close() removes the folder

    with gr.Blocks():
        tiny = export_panel(manager, gr.State(None), gr.State(None), files=ExportFiles(max_source_bytes=1000))
    try:
        status = _shown(tiny, "kept")[0]
        assert "larger than the app exports" in status and "python -m compressor export --run kept" in status
        assert list(tiny.files.root.iterdir()) == []
    finally:
        tiny.close()
