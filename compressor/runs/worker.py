"""The worker process: runs job targets one at a time and streams what happens back over a pipe.

Both ends of the pipe live here: `WorkerProcess` is the app's handle (start, hand a run, read its
messages, stop), `worker_main` the loop inside the child, which `WorkerProcess` starts with
multiprocessing's "spawn" context for `compressor.runs.manager.JobManager`. Start-up imports only the
standard library and light `compressor` modules (this module imports the job context, never the
manager), so a fresh worker (after a cancel or a crash) is ready in a fraction of a second. Once ready,
it imports its target's module in the background (torch and transformers, for the runner), so the
next run does not wait for those imports; a run handed over meanwhile waits on Python's import lock.

Pipe protocol (tuples of plain values; reports travel as JSON text, never pickled objects)
    parent -> worker   ("run", run_id, target, payload_json, artifact_dir)   |   ("stop",)
    worker -> parent   ("ready", pid)
                       ("progress", run_id, progress_dict)
                       ("log", run_id, time, line)
                       ("partial", run_id, report_json)      a report measured so far (Report.to_dict())
                       ("done", run_id, report_json)
                       ("error", run_id, message, traceback_text)   "" for a LabError (bad input)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from multiprocessing import parent_process
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path

from compressor.errors import LabError
from compressor.runs.context import BaselineCache, JobContext, dict_json, failure_message
from compressor.runs.store import RunStore

PARENT_CHECK_S = 1.0  # how often an orphaned worker notices that the app is gone
KILL_GRACE_S = 2.0  # SIGTERM first, SIGKILL after this
NAME_PREFIX = "lab-worker"  # process names; a JobManager built inside a worker sees it and stays inert


class WorkerProcess:
    """The app's handle on one worker process.

    Attributes:
        process, conn: the child process and the app's end of its pipe.
        ready: the child has imported what it needs; runs are handed over only now, so start-up is
            not counted as run time.
        run_id: the run it is working on, or None when idle.
    """

    def __init__(self, mp: SpawnContext, data_dir: str, name: str, preload: str | None = None):
        parent_conn, child_conn = mp.Pipe(duplex=True)
        self.process = mp.Process(
            target=worker_main,
            args=(child_conn, data_dir, preload),
            name=name,
            daemon=False,  # a daemonic worker could not start processes of its own (tokenizers, compile)
        )
        # Spawn re-runs the parent's __main__ module in the child so that pickled references to it
        # resolve. The worker needs nothing from it, and for `python app.py` it would mean importing
        # Gradio and building the page in every worker, so the child is shown a blank __main__.
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self.process.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
        child_conn.close()
        self.conn = parent_conn
        self.ready = False
        self.run_id: str | None = None

    def hand(self, run_id: str, target: str, payload_json: str, artifact_dir: str) -> None:
        """Gives the idle worker a run; raises OSError if it died meanwhile."""
        self.conn.send(("run", run_id, target, payload_json, artifact_dir))
        self.run_id = run_id

    def messages(self) -> Iterator[tuple]:
        """The messages waiting in the pipe, without blocking."""
        try:
            while self.conn.poll():
                yield self.conn.recv()
        except (EOFError, OSError):  # a worker that died mid-message: its exit code tells the rest
            return

    def close(self) -> None:
        """Frees the pipe and process handle of a worker that has exited."""
        self.conn.close()
        self.process.close()

    def stop(self, graceful: bool) -> None:
        """Ends the process: asks an idle one to stop; terminates, then kills, a busy one."""
        if graceful:
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
            self.process.join(KILL_GRACE_S)
        if self.process.is_alive():
            self.process.terminate()  # no handler in the worker: SIGTERM ends it even inside a C kernel
            self.process.join(KILL_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(KILL_GRACE_S)
        self.conn.close()
        if not self.process.is_alive():
            self.process.close()


def target_spec(target: str | Callable) -> str:
    """"package.module:function" for a target given as that string or as such a function."""
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"target={target!r} is not valid: use 'package.module:function'")
        return target
    module, name = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if not module or module == "__main__" or "<" in name:
        raise ValueError(
            f"target={target!r} is not valid: a worker process imports its target, so give a "
            "module-level function of an importable module, or a 'package.module:function' string"
        )
    return f"{module}:{name}"


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


def _preload(target: str) -> None:
    # Imports the target's module while the worker is idle; a failure is left for the run to report.
    with contextlib.suppress(BaseException):
        importlib.import_module(target.partition(":")[0])


def worker_main(conn: Connection, data_dir: str, preload: str | None = None) -> None:
    """Entry point of the worker process (the target of `multiprocessing.Process`); `preload` is the
    "package.module:function" target whose module is imported in the background once ready."""
    # Before the target loads torch: OpenMP threads spinning while they wait stall on shared cores
    # (4-6x slower on a busy 2-core machine, shared/ENVIRONMENT.md). The app's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    send_lock = threading.Lock()  # the target may report progress from its own threads

    def send(*msg: object) -> None:
        with send_lock:
            conn.send(msg)

    open_store = functools.cache(lambda: RunStore(data_dir))  # opened on the first cache access
    cache = BaselineCache(open_store)
    send("ready", os.getpid())
    if preload:
        threading.Thread(target=_preload, args=(preload,), name="preload", daemon=True).start()
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
        on_partial=lambda report_json: send("partial", run_id, report_json),
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
    except BaseException as e:  # noqa: B036 - SystemExit/KeyboardInterrupt in a target still end only the job
        # a LabError is the input's fault and says so itself: its traceback would tell the operator nothing
        send("error", run_id, failure_message(e), "" if isinstance(e, LabError) else traceback.format_exc())
    else:
        send("done", run_id, report_json)
    finally:
        engine_log.removeHandler(handler)
        engine_log.setLevel(old_level)
