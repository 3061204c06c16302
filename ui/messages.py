"""What a visitor reads when something goes wrong: a sentence naming the problem and the fix, never a
traceback, a bare "Error" or a path on the server.

    @guarded
    def on_click(...): ...      # LabError -> its message; anything else -> a short apology, logged here

`public(text)` takes server paths out of any text shown to a visitor: the data folder, the repository,
the temp folder and the home folder become "(data folder)" and the like, and any other absolute path
keeps only its last part.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import tempfile
from pathlib import Path

import gradio as gr

from compressor.errors import LabError
from compressor.paths import REPO, default_data_dir

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 600  # an error message is a sentence or two, not an echo of the input
# An absolute POSIX path of two or more parts, or a Windows one: not part of a URL or a word.
_PATH = re.compile(r"(?<![\w:/.~-])(?:/(?:[\w.+@%~-]+/)+[\w.+@%~-]*|[A-Za-z]:\\(?:[\w.+@ -]+\\)*[\w.+@-]*)")


def _roots() -> list[tuple[str, str]]:
    """(server folder, what a visitor sees instead), longest first so the most specific wins."""
    pairs = [(str(default_data_dir()), "(data folder)"), (str(REPO), "(lab folder)"),
             (tempfile.gettempdir(), "(temp folder)"), (str(Path.home()), "~")]
    extra = os.environ.get("LAB_DATA_DIR")
    if extra:
        pairs.append((str(Path(extra).expanduser()), "(data folder)"))
    return sorted(((r.rstrip("/"), s) for r, s in pairs if r and r != "/"), key=lambda p: -len(p[0]))


def _hide(match: re.Match) -> str:
    path = match.group(0)
    for root, shown in _roots():
        if path == root or path.startswith(root + "/"):
            return shown + path[len(root):]
    name = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
    return f".../{name}" if name else "..."


def public(text: object) -> str:
    """`text` as a visitor may read it: server paths hidden, one message's length at most."""
    out = _PATH.sub(_hide, str(text))
    if len(out) > MAX_MESSAGE_CHARS:
        out = out[: MAX_MESSAGE_CHARS - 3] + "..."
    return out


def as_gr_error(e: BaseException, what: str = "") -> gr.Error:
    """The gr.Error a visitor sees for `e`: its own message for a LabError or gr.Error; for anything
    else a short sentence (the traceback goes to the server's log)."""
    if isinstance(e, gr.Error):
        return gr.Error(public(e.message), print_exception=False)
    if isinstance(e, LabError):
        return gr.Error(public(e), print_exception=False)
    log.exception("unexpected error%s", f" in {what}" if what else "")
    return gr.Error(f"The server could not do this ({type(e).__name__}: {public(e) or 'no details'}). "
                    "Nothing was changed; try again, and if it keeps happening, report it with the time.",
                    print_exception=False)


def guarded(fn):
    """Wraps a Gradio handler (function or generator) so every failure reaches the visitor as a clear
    gr.Error. The signature is kept, so Gradio still fills `gr.Request` parameters."""
    name = getattr(fn, "__qualname__", "a handler")
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as e:
                raise as_gr_error(e, name) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise as_gr_error(e, name) from None
    return call
