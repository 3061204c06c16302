"""The one folder of an app's downloadable files (history exports, model archives, the recipe as .yaml).

Made once per app in the system's temp folder (Gradio hands out files from there, whatever LAB_DATA_DIR
is), never once per page load, and removed when the app stops (ui.page.stop) or, failing that, when the
interpreter exits: a test suite or a restarted Space leaves no `lab-page-*` folders behind.

    files = AppFiles()
    exports = Exports(files.folder("exports"))
    ...
    files.remove()
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

PREFIX = "lab-page-"


class AppFiles:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        # runs once: on remove(), when this object is collected, or at interpreter exit (SIGTERM exits through
        # SystemExit, so a stopped Space cleans up too)
        self._remove = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def folder(self, name: str) -> Path:
        """A subfolder for one kind of file, made if needed."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def remove(self) -> None:
        """Removes the folder and everything in it; safe to call twice."""
        self._remove()
