"""Background jobs: worker processes, a FIFO queue across sessions, cancel, time limits, run history.

    manager = JobManager(data_dir, target="compressor.runs.experiment:run_job", concurrency=1, time_limit_s=900)
    run_id = manager.submit({"model": "demo", "recipe": [...]}, owner=session_id)
    manager.position(run_id)          # 1 = next in the queue, 0 = running, None = finished
    manager.events(run_id, since=0)   # progress and log events, for a polling UI
    manager.cancel(run_id)            # kills the worker mid-computation and starts a fresh one
    manager.wait(run_id, timeout=60)  # the finished run: status, report, error, log

A job runs `target(payload, ctx) -> dict` in a worker process (multiprocessing "spawn"), never in the
app's process, so a crash or an out-of-memory kill ends only that job. One background thread in the
app process hands queued runs to idle workers, reads their messages, enforces cancels and time
limits, and records everything in the SQLite run store (`compressor.runs.store`). Every public method is
thread-safe, so Gradio handlers may call them from any thread.

Runs left queued or running by a previous process are marked interrupted at start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from compressor.errors import LabError
from compressor.progress import Progress
from compressor.runs.store import (
    CANCELLED,
    FAILED,
    FINAL_STATUSES,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    RunStore,
    default_data_dir,
)

try:  # POSIX: one manager per data folder decides what a previous process left unfinished
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

DEFAULT_TARGET = "compressor.runs.experiment:run_job"
WORKER_NAME_PREFIX = "lab-worker"
POLL_S = 0.25  # the scheduler's longest sleep; cancels and deaths wake it at once
KILL_GRACE_S = 2.0  # SIGTERM first, SIGKILL after this
PROGRESS_FLUSH_S = 1.0  # progress snapshots reach the store at most this often per run
MAX_EVENTS_PER_RUN = 5000  # events kept in memory for a live view; older ones are dropped
LIVE_FINISHED_KEPT = 200  # finished runs whose in-memory events stay readable
STARTUP_FAILURES_FATAL = 3  # workers dying before "ready" this many times in a row fail the next run

_PROGRESS_FIELDS = {f.name for f in fields(Progress)}
# Progress's annotations ("int | None", ...) as (plain type, None allowed), to check each value.
_PROGRESS_TYPES = {f.name: ({"str": str, "int": int, "float": float}[f.type.split(" |")[0]], "None" in f.type)
                   for f in fields(Progress)}


def _plain_field(name: str, value: object) -> object:
    """One progress value as the plain Python type its Progress field names. numpy and 0-d torch
    scalars are unwrapped (`.item()`): the store writes JSON, which knows neither."""
    kind, optional = _PROGRESS_TYPES[name]
    if value is None and optional:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, RuntimeError, TypeError):  # several values: refused below
            value = value.item()
    if kind is str:
        ok = isinstance(value, str)
    else:  # an int is a fine float; a bool is neither
        ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
        ok = ok and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"progress field {name}={value!r} ({type(value).__name__}) must be a {kind.__name__}"
                         + (" or None" if optional else ""))
    return float(value) if kind is float else value


def progress_dict(event: Progress | dict) -> dict:
    """A Progress (or a dict of its fields) as a dict of plain Python values (JSON-ready); names
    unknown or missing fields and values of the wrong type."""
    if isinstance(event, Progress):
        d = event.to_dict()
    elif not isinstance(event, dict):
        raise TypeError(f"progress event must be a Progress or a dict, got {type(event).__name__}")
    else:
        unknown = set(event) - _PROGRESS_FIELDS
        if unknown:
            raise ValueError(f"progress event has unknown fields {sorted(unknown)}; known: {sorted(_PROGRESS_FIELDS)}")
        try:
            d = Progress(**event).to_dict()
        except TypeError as e:
            raise ValueError(f"progress event {event!r} is incomplete: {e} (stage and fraction are required)") from e
    return {k: _plain_field(k, v) for k, v in d.items()}


def dict_json(value: object, what: str) -> str:
    """`value` as JSON text; a LabError names `what` unless it is a JSON-serialisable dict."""
    if not isinstance(value, dict):
        raise LabError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise LabError(f"{what} is not JSON ({e}); use plain dicts, lists, strings and numbers") from e


# -- what a job target sees --------------------------------------------------------------------


class BaselineCache:
    """Baseline measurements keyed by the caller (model + evaluation settings), stored as JSON."""

    def __init__(self, store: RunStore | Callable[[], RunStore]):
        # A callable opens the store on first use: a worker whose target never caches opens nothing.
        self._store = store

    def _open(self) -> RunStore:
        return self._store if isinstance(self._store, RunStore) else self._store()

    def get(self, key: str) -> dict | None:
        return self._open().cache_get(key)

    def put(self, key: str, value: dict) -> None:
        self._open().cache_put(key, value)


class JobContext:
    """What a job target receives beside its payload.

    Attributes:
        run_id: the run's id in the store.
        artifact_dir: a folder of this run's own; files saved here (a compressed model) are kept for
            download when the run succeeds, subject to the manager's `ArtifactPolicy`.
        cache: `BaselineCache` with `get(key) -> dict | None` and `put(key, dict)`.
    """

    def __init__(
        self,
        *,
        run_id: str,
        artifact_dir: Path,
        cache: BaselineCache,
        on_progress: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = None,
    ):
        self.run_id = run_id
        self.artifact_dir = Path(artifact_dir)
        self.cache = cache
        self._on_progress = on_progress or (lambda _: None)
        self._on_log = on_log or (lambda _: None)

    def progress(self, event: Progress | dict) -> None:
        """Reports stage, layer i/n, fraction, ETA and message; a non-empty message is logged too."""
        self._on_progress(progress_dict(event))

    def log(self, message: str) -> None:
        self._on_log(str(message))

    @classmethod
    def local(
        cls,
        data_dir: str | Path | None = None,
        *,
        artifact_dir: str | Path | None = None,
        on_progress: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = print,
    ) -> JobContext:
        """A context for running a target in this process (the CLI): cache in the data folder's
        store, artifacts in `artifact_dir` or a new temporary folder."""
        store_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        art = Path(artifact_dir) if artifact_dir is not None else Path(tempfile.mkdtemp(prefix="lab-run-"))
        art.mkdir(parents=True, exist_ok=True)
        cache = BaselineCache(functools.cache(lambda: RunStore(store_dir)))
        return cls(run_id="local", artifact_dir=art, cache=cache, on_progress=on_progress, on_log=on_log)


# -- artifacts ---------------------------------------------------------------------------------


@dataclass
class ArtifactPolicy:
    """Which compressed models stay on disk for download.

    Args:
        keep_last: at most this many runs keep their artifacts (newest first).
        max_run_bytes: an artifact larger than this is deleted when its run ends (the run still succeeds;
            its log says why nothing can be downloaded).
        max_total_bytes: older artifacts are deleted until all kept ones fit in this many bytes.
    """

    keep_last: int = 5
    max_run_bytes: int = 4 * 2**30
    max_total_bytes: int = 10 * 2**30

    def __post_init__(self):
        for name in ("keep_last", "max_run_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ArtifactPolicy.{name}={value!r} is not valid: use an integer >= 0")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


# -- the manager -------------------------------------------------------------------------------


@dataclass
class _Live:
    """In-memory state of a run submitted to this manager."""

    run_id: str
    owner: str
    payload_json: str
    status: str = QUEUED
    progress: dict | None = None
    events: list[dict] = field(default_factory=list)
    dropped: int = 0  # events dropped from the front of `events`
    log_lines: list[str] = field(default_factory=list)
    started: float | None = None  # time.monotonic() at dispatch
    cancel_requested: bool = False
    last_flush: float = 0.0


class _Worker:
    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.ready = False  # imports done: runs are handed over only now, so start-up is not run time
        self.run_id: str | None = None


def _target_string(target: str | Callable) -> str:
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


class JobManager:
    """Runs job targets in worker processes, in submission order, and records every run.

    Args:
        data_dir: folder of the run store and artifacts; default `compressor.store.default_data_dir()`.
        target: "package.module:function" (or such a function) called as `target(payload, ctx) -> dict`.
        concurrency: number of worker processes, i.e. jobs running at once.
        time_limit_s: a job running longer is stopped and ends failed; None for no limit.
        artifacts: what happens to files a job leaves in `ctx.artifact_dir`.
        max_queued_per_owner: submissions beyond this many unfinished runs per owner are refused.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        target: str | Callable = DEFAULT_TARGET,
        concurrency: int = 1,
        time_limit_s: float | None = None,
        artifacts: ArtifactPolicy | None = None,
        max_queued_per_owner: int | None = None,
    ):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} is not valid: use an integer >= 1")
        if time_limit_s is not None and not time_limit_s > 0:
            raise ValueError(f"time_limit_s={time_limit_s!r} is not valid: use seconds > 0, or None for no limit")
        self.target = _target_string(target)
        self.concurrency = concurrency
        self.time_limit_s = time_limit_s
        self.artifacts = artifacts or ArtifactPolicy()
        self.max_queued_per_owner = max_queued_per_owner
        self.store = RunStore(data_dir)
        self.data_dir = self.store.data_dir
        self.artifact_root = self.data_dir / "artifacts"
        self.artifact_root.mkdir(exist_ok=True)

        self._mp = multiprocessing.get_context("spawn")
        self._cond = threading.Condition(threading.RLock())
        self._queue: deque[str] = deque()
        self._live: dict[str, _Live] = {}
        self._finished_order: deque[str] = deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = self._mp.Pipe(duplex=False)
        self._wake_pending = False  # at most one byte in the wake pipe, so writers never block
        self._idle_deaths, self._restart_at = 0, 0.0  # back-off for workers that die while idle
        self._stopping = False
        self._thread: threading.Thread | None = None

        # Spawn re-imports the parent's main module in each child; if that module (app.py) builds a
        # JobManager at import time, the copy inside a worker must stay inert.
        self._inert = multiprocessing.current_process().name.startswith(WORKER_NAME_PREFIX)
        self._lock_file = None
        if self._inert:
            return
        if self._acquire_folder_lock():
            ids = self.store.mark_unfinished(
                INTERRUPTED, "the app stopped (restart or crash) before this run finished; submit it again"
            )
            if ids:
                log.warning("marked %d unfinished run(s) from a previous process as interrupted", len(ids))
            self._prune_artifacts()
        else:
            log.warning("another process manages jobs in %s; not touching its unfinished runs", self.data_dir)
        self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)

        def _shutdown_at_exit() -> None:
            manager = ref()
            if manager is not None:
                manager.shutdown()

        self._atexit = _shutdown_at_exit
        atexit.register(self._atexit)

    # -- public API --------------------------------------------------------------------------

    def submit(self, payload: dict, owner: str) -> str:
        """Queues a job; returns its run id. The payload must be a JSON-serialisable dict."""
        if self._inert:
            raise RuntimeError("this JobManager was built inside a worker process and runs nothing")
        if not isinstance(owner, str) or not owner.strip():
            raise LabError(f"owner={owner!r} is not valid: give the session or user id as a non-empty string")
        payload_json = dict_json(payload, "the payload")
        with self._cond:
            if self._stopping:
                raise LabError("the job manager is shutting down; try again in a moment")
            if self.max_queued_per_owner is not None:
                mine = sum(1 for r in self._live.values() if r.owner == owner and r.status not in FINAL_STATUSES)
                if mine >= self.max_queued_per_owner:
                    raise LabError(
                        f"you already have {mine} runs queued or running (the limit is "
                        f"{self.max_queued_per_owner}); wait for one to finish or cancel one"
                    )
            run_id = self.store.create_run(owner, json.loads(payload_json))
            live = _Live(run_id, owner, payload_json)
            self._live[run_id] = live
            self._queue.append(run_id)
            self._event(live, {"kind": "status", "status": QUEUED})
        self._wake()
        return run_id

    def status(self, run_id: str) -> str | None:
        """queued / running / succeeded / failed / cancelled / interrupted; None for an unknown id."""
        with self._cond:
            live = self._live.get(run_id)
            if live is not None:
                return live.status
        run = self.store.get_run(run_id)
        return None if run is None else run["status"]

    def position(self, run_id: str) -> int | None:
        """1-based place in the queue (1 = next to start), 0 while running, None when not waiting."""
        with self._cond:
            live = self._live.get(run_id)
            if live is None or live.status in FINAL_STATUSES:
                return None
            if live.status == RUNNING:
                return 0
            try:
                return self._queue.index(run_id) + 1
            except ValueError:  # being handed to a worker right now
                return 0

    def queue(self) -> list[dict]:
        """Queued runs in order: run_id, owner, position (no payloads: other users' settings stay private)."""
        with self._cond:
            return [
                {"run_id": rid, "owner": self._live[rid].owner, "position": i + 1}
                for i, rid in enumerate(self._queue)
            ]

    def cancel(self, run_id: str, owner: str | None = None) -> bool:
        """Cancels a queued or running run (a running one within about a second); False if already over."""
        with self._cond:
            live = self._live.get(run_id)
            if live is None or live.status in FINAL_STATUSES:
                return False
            self._check_owner(live.owner, owner, run_id)
            if run_id in self._queue:
                self._queue.remove(run_id)
                self._finish(live, CANCELLED, error="cancelled before it started")
                return True
            live.cancel_requested = True
        self._wake()
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> dict:
        """Blocks until the run is over; returns `get_run(run_id)`. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                live = self._live.get(run_id)
                if live is None or live.status in FINAL_STATUSES:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"run {run_id} is still {live.status} after {timeout} s")
                self._cond.wait(left)
        run = self.get_run(run_id)
        if run is None:
            raise KeyError(f"run {run_id!r} is not in the store at {self.store.path}")
        return run

    def events(self, run_id: str, since: int = 0, timeout: float = 0.0) -> list[dict]:
        """Events of a run submitted to this manager, from index `since` on. Each has `index`, `kind`
        ("status", "progress" or "log") and its fields. Waits up to `timeout` s for a new one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                live = self._live.get(run_id)
                if live is None:
                    return []
                end = live.dropped + len(live.events)
                if end > since or live.status in FINAL_STATUSES:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            start = max(since - live.dropped, 0)
            return [dict(e) for e in live.events[start:]]

    def follow(self, run_id: str, poll_s: float = 1.0) -> Iterator[dict]:
        """Yields the run's events as they come, until it is over (for a Gradio generator)."""
        since = 0
        while True:
            events = self.events(run_id, since=since, timeout=poll_s)
            if events:
                since = events[-1]["index"] + 1
            yield from events
            if not events and self.status(run_id) in FINAL_STATUSES | {None}:
                return

    def latest_progress(self, run_id: str) -> dict | None:
        with self._cond:
            live = self._live.get(run_id)
            if live is not None:
                return live.progress
        run = self.store.get_run(run_id)
        return None if run is None else run["progress"]

    def get_run(self, run_id: str) -> dict | None:
        """The stored run (parsed JSON columns), with `position` and the live log while it runs."""
        run = self.store.get_run(run_id)
        if run is None:
            return None
        with self._cond:
            live = self._live.get(run_id)
            if live is not None and live.status not in FINAL_STATUSES:
                run["status"], run["progress"] = live.status, live.progress
                run["log"] = "\n".join(live.log_lines)
        run["position"] = self.position(run_id)
        return run

    def list_runs(
        self, owner: str | None = None, status: str | tuple[str, ...] | None = None, limit: int | None = 100,
        include_report: bool = True,
    ) -> list[dict]:
        """Stored runs, newest first."""
        return self.store.list_runs(owner=owner, status=status, limit=limit, include_report=include_report)

    def delete_run(self, run_id: str, owner: str | None = None) -> bool:
        """Deletes a finished run and its artifact; a queued or running run must be cancelled first."""
        with self._cond:
            run = self.store.get_run(run_id)
            if run is None:
                return False
            self._check_owner(run["owner"], owner, run_id)
            live = self._live.get(run_id)
            if live is not None and live.status not in FINAL_STATUSES:
                raise LabError(f"run {run_id} is {live.status}; cancel it before deleting it")
            self._live.pop(run_id, None)
            shutil.rmtree(self.artifact_root / run_id, ignore_errors=True)
            return self.store.delete_run(run_id)

    def prune_artifacts(self) -> None:
        """Applies the artifact policy now: for runs recorded outside the queue (the app's ZeroGPU path)."""
        with self._cond:
            self._prune_artifacts()

    def warm_up(self, timeout: float | None = None) -> bool:
        """Waits until all `concurrency` workers have started and can take a run at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while sum(w.ready for w in self._workers) < self.concurrency:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._stopping:
                    return False
                self._cond.wait(left)
            return True

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in self._workers if w.process.pid is not None]

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stops the workers; queued and running runs end interrupted. Safe to call twice."""
        with self._cond:
            if self._stopping:
                already = True
            else:
                already, self._stopping = False, True
        if already or self._inert:
            return
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        atexit.unregister(self._atexit)
        with self._cond:  # the scheduler is gone (or stuck): whatever is left ends here
            for w in list(self._workers):
                self._stop_worker(w, graceful=w.run_id is None)
            for live in list(self._live.values()):
                if live.status not in FINAL_STATUSES:
                    self._finish(live, INTERRUPTED, error="the app shut down before this run finished")
            self._queue.clear()
        self._release_folder_lock()
        self.store.close()

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- the scheduler thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # a bug here must not stop the queue for good
                log.exception("job scheduler step failed; going on")
                time.sleep(POLL_S)

    def _step(self) -> bool:
        """One round: start workers, hand out runs, wait for messages, enforce cancels and limits."""
        with self._cond:
            if self._stopping:
                return False
            self._fill_pool()
            self._dispatch()
            waitables = [self._wake_r]
            for w in self._workers:
                waitables += [w.conn, w.process.sentinel]
        try:
            ready = wait_ready(waitables, timeout=POLL_S)
        except OSError:  # a pipe closed under us: the checks below sort it out
            ready = []
        with self._cond:
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
                self._wake_pending = False
            for w in list(self._workers):
                self._drain(w)
            for w in list(self._workers):
                if not w.process.is_alive():
                    self._drain(w)
                    self._on_worker_death(w)
            self._enforce_limits()
        return True

    def _fill_pool(self) -> None:
        if time.monotonic() < self._restart_at:
            return
        while len(self._workers) < self.concurrency and not self._stopping:
            self._workers.append(self._start_worker())

    def _start_worker(self) -> _Worker:
        from compressor.runs.worker import worker_main

        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=worker_main,
            args=(child_conn, str(self.data_dir)),
            name=f"{WORKER_NAME_PREFIX}-{len(self._workers)}",
            daemon=False,  # a daemonic worker could not start processes of its own (tokenizers, compile)
        )
        # Spawn re-runs the parent's __main__ module in the child so that pickled references to it
        # resolve. The worker needs nothing from it, and for `python app.py` it would mean importing
        # Gradio and building the page in every worker, so the child is shown a blank __main__.
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
        child_conn.close()
        return _Worker(process, parent_conn)

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.run_id is not None or not w.ready or not w.process.is_alive():
                continue
            run_id = self._queue.popleft()
            live = self._live[run_id]
            art = self.artifact_root / run_id
            try:
                w.conn.send(("run", run_id, self.target, live.payload_json, str(art)))
            except OSError:  # the worker died while idle: the run waits for the next one
                self._queue.appendleft(run_id)
                continue
            w.run_id = run_id
            live.status, live.started = RUNNING, time.monotonic()
            self.store.update_run(run_id, status=RUNNING, started_at=time.time())
            self._event(live, {"kind": "status", "status": RUNNING})

    def _drain(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):  # a worker that died mid-message: its sentinel tells the rest
            pass

    def _handle(self, w: _Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            self._cond.notify_all()
            return
        live = self._live.get(msg[1])
        if live is None or live.status in FINAL_STATUSES:
            return
        if kind == "progress":
            live.progress = msg[2]
            self._event(live, {"kind": "progress", **msg[2]})
            if msg[2].get("message"):
                self._log(live, msg[2]["message"], msg[2].get("time"))
            if time.monotonic() - live.last_flush >= PROGRESS_FLUSH_S:
                live.last_flush = time.monotonic()
                self.store.update_run(live.run_id, progress=live.progress, log="\n".join(live.log_lines))
        elif kind == "log":
            self._log(live, msg[3], msg[2])
        elif kind == "done":
            w.run_id, self._idle_deaths = None, 0
            self._finish(live, SUCCEEDED, report=json.loads(msg[2]))
        elif kind == "error":
            w.run_id, self._idle_deaths = None, 0
            self._log(live, msg[3].rstrip())
            self._finish(live, FAILED, error=msg[2])

    def _on_worker_death(self, w: _Worker) -> None:
        code = w.process.exitcode
        self._workers.remove(w)
        w.conn.close()
        w.process.close()
        if w.run_id is None:
            # A worker that cannot even start (a broken import) would otherwise be restarted in a
            # tight loop: back off, up to half a minute, until a job gets through again.
            self._idle_deaths += 1
            delay = min(30.0, 0.5 * 2 ** (self._idle_deaths - 1))
            self._restart_at = time.monotonic() + delay
            log.warning("an idle worker process exited with code %s; starting another in %.1f s", code, delay)
            if not w.ready and self._idle_deaths >= STARTUP_FAILURES_FATAL and self._queue:
                # Workers keep dying before they can run anything: fail the next run, not wait forever.
                self._finish(
                    self._live[self._queue.popleft()],
                    FAILED,
                    error=f"the worker process could not start ({self._idle_deaths} tries, last exit code "
                    f"{code}); the app's log shows why",
                )
            return
        if code is not None and code < 0:
            how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}; the app's log shows its output"
        hint = " - most likely it ran out of memory; try a smaller model or fewer samples" if code == -9 else ""
        self._finish(self._live[w.run_id], FAILED, error=f"the worker process died ({how}) while running this job{hint}")

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            live = self._live.get(w.run_id) if w.run_id else None
            if live is None:
                continue
            if live.cancel_requested:
                self._stop_worker(w, graceful=False)
                self._finish(live, CANCELLED, error="cancelled while running")
            elif self.time_limit_s is not None and now - live.started > self.time_limit_s:
                self._stop_worker(w, graceful=False)
                self._finish(
                    live,
                    FAILED,
                    error=f"stopped after the time limit of {self.time_limit_s:g} s; "
                    "choose a smaller model, a lighter recipe or fewer evaluation samples",
                )

    def _stop_worker(self, w: _Worker, graceful: bool) -> None:
        """Ends a worker process: asks an idle one to stop; terminates, then kills, a busy one."""
        if graceful:
            with contextlib.suppress(OSError):
                w.conn.send(("stop",))
            w.process.join(KILL_GRACE_S)
        if w.process.is_alive():
            w.process.terminate()  # no handler in the worker: SIGTERM ends it even inside a C kernel
            w.process.join(KILL_GRACE_S)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(KILL_GRACE_S)
        w.conn.close()
        if not w.process.is_alive():
            w.process.close()
        if w in self._workers:
            self._workers.remove(w)

    # -- bookkeeping (called with self._cond held) --------------------------------------------

    def _event(self, live: _Live, event: dict) -> None:
        event.setdefault("time", time.time())
        event["index"] = live.dropped + len(live.events)
        live.events.append(event)
        if len(live.events) > MAX_EVENTS_PER_RUN:
            drop = len(live.events) - MAX_EVENTS_PER_RUN
            del live.events[:drop]
            live.dropped += drop
        self._cond.notify_all()

    def _log(self, live: _Live, line: str, t: float | None = None) -> None:
        live.log_lines.append(line)
        self._event(live, {"kind": "log", "message": line, "time": t or time.time()})

    def _finish(self, live: _Live, status: str, report: dict | None = None, error: str | None = None) -> None:
        artifact = self._settle_artifact(live, status)
        row = {"status": status, "finished_at": time.time(), "report": report, "error": error,
               "progress": live.progress, "log": "\n".join(live.log_lines), "artifact_path": artifact}
        try:
            self.store.update_run(live.run_id, **row)
        except Exception as e:  # a value that is not JSON, a full disk: the row must still end
            log.exception("run %s: storing its end (%s) failed; recording it as failed without its report",
                          live.run_id, status)
            if artifact is not None:  # only succeeded runs keep one, and pruning looks at those alone
                shutil.rmtree(self.artifact_root / live.run_id, ignore_errors=True)
            status = FAILED
            error = (f"the run ended ({row['status']}) but its result could not be stored: "
                     f"{type(e).__name__}: {e}" + (f"; the run's own error: {error}" if error else ""))
            row.update(status=status, report=None, error=error, progress=None, artifact_path=None)
            artifact = None
            try:
                self.store.update_run(live.run_id, **row)
            except Exception:
                log.exception("run %s: the store refused the failure record too; the next start marks it "
                              "interrupted", live.run_id)
        # set after the store write, so that in-memory and stored status agree when it falls back
        live.status = status
        self._event(live, {"kind": "status", "status": status, "error": error})
        self._finished_order.append(live.run_id)
        while len(self._finished_order) > LIVE_FINISHED_KEPT:
            old = self._finished_order.popleft()
            if old in self._live and self._live[old].status in FINAL_STATUSES:
                del self._live[old]
        if status == SUCCEEDED and artifact is not None:
            self._prune_artifacts()

    def _settle_artifact(self, live: _Live, status: str) -> str | None:
        folder = self.artifact_root / live.run_id
        if not folder.exists():
            return None
        size = _folder_bytes(folder) if status == SUCCEEDED else 0
        if status != SUCCEEDED or size == 0:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        if size > self.artifacts.max_run_bytes:
            shutil.rmtree(folder, ignore_errors=True)
            live.log_lines.append(
                f"the compressed model ({_gb(size)}) is larger than the artifact cap of "
                f"{_gb(self.artifacts.max_run_bytes)}; it was not kept for download"
            )
            return None
        return str(folder)

    def _prune_artifacts(self) -> None:
        """Keeps the newest `keep_last` artifacts within `max_total_bytes`; deletes strays."""
        busy = {rid for rid, r in self._live.items() if r.status not in FINAL_STATUSES}
        # runs recorded in the store by another path (the app's ZeroGPU runs) write their folder too
        busy |= {r["id"] for r in self.store.list_runs(status=(QUEUED, RUNNING), limit=None, include_report=False)}
        kept = {r["id"]: r for r in self.store.list_runs(status=SUCCEEDED, limit=None, include_report=False)
                if r["artifact_path"]}
        total, count = 0, 0
        for run in sorted(kept.values(), key=lambda r: r["finished_at"] or 0, reverse=True):
            folder = Path(run["artifact_path"])
            size = _folder_bytes(folder) if folder.exists() else 0
            if size and count < self.artifacts.keep_last and total + size <= self.artifacts.max_total_bytes:
                total, count = total + size, count + 1
                continue
            shutil.rmtree(folder, ignore_errors=True)
            self.store.update_run(run["id"], artifact_path=None)
            kept.pop(run["id"])
        kept_names = {Path(r["artifact_path"]).name for r in kept.values()}
        for folder in self.artifact_root.iterdir():
            if folder.name not in kept_names and folder.name not in busy:
                shutil.rmtree(folder, ignore_errors=True)

    def _check_owner(self, run_owner: str, owner: str | None, run_id: str) -> None:
        if owner is not None and owner != run_owner:
            raise LabError(f"run {run_id} belongs to another session; you can only change your own runs")

    def _wake(self) -> None:
        with self._cond:
            if self._wake_pending:
                return
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.send_bytes(b"x")

    # -- one manager per data folder ----------------------------------------------------------

    def _acquire_folder_lock(self) -> bool:
        if fcntl is None:
            return True
        f = open(self.data_dir / "jobs.lock", "a+")  # noqa: SIM115 - held open for the manager's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock_file = f
        return True

    def _release_folder_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None
