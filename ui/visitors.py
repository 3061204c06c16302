"""Who is asking: a visitor's id, kept in the browser so their runs survive a reload.

A browser gets a random id on its first visit (`new_visitor_id`), stored in its localStorage by a
`gr.BrowserState` and read back on every page load into a per-session `gr.State`; every handler that
submits, cancels, lists or opens runs names its owner with `owner_of(visitor, request)`. A script
(gradio_client) has no localStorage: its owner is its Gradio session, so a client cancels its own runs.

Ids are 128 random bits: a visitor can claim an id only by knowing it, and ids are never shown to
other visitors (the gallery names runs, not owners).

The page also remembers which Gradio session belongs to which visitor (`Sessions`), so that when a
tab closes (Gradio's unload event names only the session) the visitor's runs can be let go after a
grace period, and picked up again when the visitor comes back within it.
"""

from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path

import gradio as gr

from compressor.errors import LabError

STORAGE_KEY = "compression-lab-visitor"
SECRET_FILE = "browser-state-secret"
_ID = re.compile(r"v-[A-Za-z0-9_-]{22}")  # "v-" + 16 random bytes, URL-safe base64


def new_visitor_id() -> str:
    return "v-" + secrets.token_urlsafe(16)


def is_visitor_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID.fullmatch(value))


def owner_of(visitor: str | None, request: gr.Request | None) -> str:
    """The owner of what this call does: the browser's visitor id, else the caller's Gradio session
    (a script's own). LabError when there is neither (a handler called outside a request)."""
    if is_visitor_id(visitor):
        return visitor
    session = getattr(request, "session_hash", None) if request is not None else None
    if isinstance(session, str) and session.strip():
        return f"s-{session.strip()[:64]}"
    raise LabError("this call carries no session, so its runs would belong to nobody: open the page in a "
                   "browser, or call the API through gradio_client (each Client is a session)")


def browser_secret(data_dir: str | Path) -> str:
    """The key the browser's stored id is kept under, the same across restarts of the app (a new one
    would make every returning visitor a stranger). Kept in the data folder; created on first use."""
    path = Path(data_dir) / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 16:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    text = secrets.token_urlsafe(24)
    try:
        path.write_text(text, encoding="ascii")
    except OSError:  # a read-only data folder: ids then last until the app restarts
        pass
    return text


class Sessions:
    """Gradio session hash -> visitor id, for the sessions open now (thread-safe, bounded)."""

    MAX = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[str, str] = {}

    def opened(self, request: gr.Request | None, owner: str) -> None:
        session = getattr(request, "session_hash", None) if request is not None else None
        if not session:
            return
        with self._lock:
            self._by_session.pop(session, None)
            self._by_session[session] = owner
            while len(self._by_session) > self.MAX:  # oldest first: dicts keep insertion order
                self._by_session.pop(next(iter(self._by_session)))

    def closed(self, request: gr.Request | None) -> str | None:
        """The owner of a session that just ended (None if unknown); still open elsewhere is the caller's
        question (`is_open`)."""
        session = getattr(request, "session_hash", None) if request is not None else None
        with self._lock:
            return self._by_session.pop(session, None) if session else None

    def is_open(self, owner: str) -> bool:
        """True when another tab of the same visitor is still open."""
        with self._lock:
            return owner in self._by_session.values()
