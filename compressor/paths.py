"""Where the lab's files live: the bundled assets and the data folder (runs, caches, artifacts).

Standard library only: the worker process and the store import it before torch is loaded.
"""

from __future__ import annotations

import functools
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
    for root, name in _roots(str(data_dir) if data_dir else str(default_data_dir())):
        text = text.replace(root, name)
    return text


@functools.lru_cache(maxsize=8)
def _roots(data_dir: str) -> tuple[tuple[str, str], ...]:
    roots = [(str(REPO), "<app>"), (data_dir, "<data>"), (sys.prefix, "<python>"), (str(Path.home()), "~")]
    roots += [(sysconfig.get_paths().get(key, ""), "<python>") for key in ("purelib", "platlib", "stdlib")]
    # the longest (most specific) first; "/" or "" would rewrite every path
    return tuple(sorted(((r, n) for r, n in roots if len(r) > 1), key=lambda rn: -len(rn[0])))
