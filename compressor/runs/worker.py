"""The worker process: runs job targets one at a time and streams what happens back over a pipe.

Runs in a child started with multiprocessing's "spawn" context by `compressor.runs.jobs.JobManager`.
Start-up imports only the standard library and light `compressor` modules; torch and transformers
load when the target imports them, so a fresh worker (after a cancel or a crash) is ready in a
fraction of a second.

Pipe protocol (tuples of plain values; reports travel as JSON text, never pickled objects)
    parent -> worker   ("run", run_id, target, payload_json, artifact_dir)   |   ("stop",)
    worker -> parent   ("ready", pid)
                       ("progress", run_id, progress_dict)
                       ("log", run_id, time, line)
                       ("done", run_id, report_json)
                       ("error", run_id, message, traceback_text)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import parent_process
from multiprocessing.connection import Connection
from pathlib import Path

from compressor.errors import LabError
from compressor.runs.jobs import BaselineCache, JobContext, dict_json
from compressor.runs.store import RunStore

PARENT_CHECK_S = 1.0  # how often an orphaned worker notices that the app is gone


def resolve_target(spec: str) -> Callable[[dict, JobContext], dict]:
    """Imports "package.module:function" and returns the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LabError(f"job target {spec!r} is not of the form 'package.module:function'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise LabError(f"job target {spec!r} cannot be imported ({type(e).__name__}: {e})") from e
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise LabError(f"job target {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise LabError(f"job target {spec!r} is not callable")
    return obj


class _ForwardLogs(logging.Handler):
    """Sends the engine's log records (the `compressor` logger) to the running job's log."""

    def __init__(self, ctx: JobContext):
        super().__init__(logging.INFO)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.ctx.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # a log line must never fail the job
            self.handleError(record)


class _LogLines(io.TextIOBase):
    """A text stream whose complete lines go to the running job's log: what a target (or a library
    it calls) prints reaches the user, not only the app's console. A carriage return (a progress bar
    redrawing its line) keeps the last redraw only."""

    def __init__(self, ctx: JobContext):
        self.ctx, self.buf = ctx, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
        if line:
            self.ctx.log(line)


def _watch_parent() -> None:
    # If the app process dies (killed, crashed), nobody reads our results: exit instead of
    # computing on as an orphan that holds memory and a CPU.
    parent = parent_process()
    while parent is not None:
        if not parent.is_alive():
            os._exit(3)
        time.sleep(PARENT_CHECK_S)


def worker_main(conn: Connection, data_dir: str) -> None:
    """Entry point of the worker process (the target of `multiprocessing.Process`)."""
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    send_lock = threading.Lock()  # the target may report progress from its own threads

    def send(*msg: object) -> None:
        with send_lock:
            conn.send(msg)

    open_store = functools.cache(lambda: RunStore(data_dir))  # opened on the first cache access
    cache = BaselineCache(open_store)
    send("ready", os.getpid())
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe: nothing more to do
            break
        if msg[0] == "stop":
            break
        _, run_id, target, payload_json, artifact_dir = msg
        _run_one(send, cache, run_id, target, json.loads(payload_json), Path(artifact_dir))
    if open_store.cache_info().currsize:
        open_store().close()


def _run_one(send, cache: BaselineCache, run_id: str, target: str, payload: dict, artifact_dir: Path) -> None:
    ctx = JobContext(
        run_id=run_id,
        artifact_dir=artifact_dir,
        cache=cache,
        on_progress=lambda p: send("progress", run_id, p),
        on_log=lambda line: send("log", run_id, time.time(), line),
    )
    handler = _ForwardLogs(ctx)
    engine_log = logging.getLogger("compressor")
    engine_log.addHandler(handler)
    old_level = engine_log.level
    if engine_log.getEffectiveLevel() > logging.INFO:
        engine_log.setLevel(logging.INFO)
    out = _LogLines(ctx)
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                report = resolve_target(target)(payload, ctx)
            finally:
                out.flush()
        report_json = dict_json(report, f"the report returned by job target {target!r}")
    except LabError as e:
        send("error", run_id, str(e), traceback.format_exc())
    except MemoryError as e:  # str(MemoryError()) is empty: say what happened and what to change
        send("error", run_id, f"the job ran out of memory (MemoryError{f': {e}' if str(e) else ''}); "
             "try a smaller model, a shorter context or fewer samples", traceback.format_exc())
    except BaseException as e:  # noqa: B036 - SystemExit/KeyboardInterrupt in a target still end only the job
        send("error", run_id, f"{type(e).__name__}: {e}", traceback.format_exc())
    else:
        send("done", run_id, report_json)
    finally:
        engine_log.removeHandler(handler)
        engine_log.setLevel(old_level)
