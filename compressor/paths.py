"""Where the lab's files live: the bundled assets and the data folder (runs, caches, artifacts).

Standard library only: the worker process and the store import it before torch is loaded.
"""

from __future__ import annotations

import os
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
