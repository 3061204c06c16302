"""Where the lab's files live: the bundled assets and the data folder (runs, caches, artifacts).

Standard library only: the worker process and the store import it before torch is loaded.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"


def default_data_dir() -> Path:
    """The data folder: $LAB_DATA_DIR, else /data when writable (a Space's persistent storage),
    else the user's cache folder: ($XDG_CACHE_HOME or ~/.cache)/compression-lab."""
    env = os.environ.get("LAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    space = Path("/data")
    if space.is_dir() and os.access(space, os.W_OK | os.X_OK):
        return space
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "compression-lab"


def scrub_paths(text: str, data_dir: str | Path | None = None) -> str:
    """`text` with the server's own folders replaced by short names (<app>, <data>, <python>, ~), for
    messages a visitor reads: where the app is installed says nothing about their input."""
    roots = [(str(REPO), "<app>"), (str(Path(data_dir) if data_dir else default_data_dir()), "<data>")]
    for key in ("purelib", "platlib", "stdlib"):
        roots.append((sysconfig.get_paths().get(key, ""), "<python>"))
    roots += [(sys.prefix, "<python>"), (str(Path.home()), "~")]
    for root, name in sorted(roots, key=lambda r: -len(r[0])):  # the longest (most specific) first
        if root and len(root) > 1:
            text = text.replace(root, name)
    return text
