"""The app's folder of downloads (ui.files): one per app, gone when the app stops or the interpreter exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ui.pages import SLEEP_TARGET


def test_the_page_files_go_when_the_app_stops(tmp_path):
    from compressor.runs.manager import JobManager
    from ui.history import Exports
    from ui.page import build_app, stop
    from ui.settings import RecipeFiles

    manager = JobManager(tmp_path, target=SLEEP_TARGET)
    demo = build_app(manager)
    _, files, export = demo.lab_owned
    root, export_root = files.root, export.files.root
    csv = Path(Exports(files).table("s-visitor", [], "csv"))
    recipe = Path(RecipeFiles(files)("stages: []\n"))
    assert csv.is_file() and recipe.is_file() and root in csv.parents and root in recipe.parents
    stop(demo, (manager,))
    assert not root.exists() and not export_root.exists()
    stop(demo, (manager,))  # twice is harmless


def test_the_page_files_go_at_interpreter_exit():
    code = "from ui.files import AppFiles; f = AppFiles(); (f.folder('exports') / 'a.csv').write_text('x'); print(f.root)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    root = Path(out.stdout.strip())
    assert root.name.startswith("lab-page-") and not root.exists()
