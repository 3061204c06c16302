"""The Ray executor: each sweep cell a Ray task, its results written to the run store on the app's side.

    executor = RayExecutor(manager, "auto")          # or "ray://head:10001"; "local" starts Ray here
    run_id = executor.submit(payload, owner)          # a queued run in manager's store, and a Ray task

Ray does the scheduling: a cell is `ray.remote` task with the resources it needs (`cpus_per_cell` CPUs, one
GPU when the request's device is CUDA), retried by Ray when its worker process dies (`max_retries`), never
for an error of the cell itself (bad input, a bug). What a task sends back travels through Ray's own APIs:

- progress and log lines go into a `ray.util.queue.Queue` as they happen, with a "start" event carrying
  the worker's pid and node (a second "start" for one cell means Ray retried it);
- a baseline measured by one cell goes through that queue too, into the app's baseline cache, and to the
  cells submitted after it as an object (`ray.put`): the sweep hands a group's other cells over only once
  its first cell is past the baseline (compressor.runs.sweep_run), so the baseline is measured once;
- the report (and the compressed model's folder, as a tar, when it fits the artifact policy) is the task's
  return value, fetched with `ray.wait` / `ray.get`.

One thread here reads them and records each cell through a `RunBook` over the manager's run store
(compressor.runs.lifecycle): the same rows, events, artifact settling and pruning as a local run.

Ray is optional: without it installed, asking for it is a LabError that says how to install it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from compressor.errors import LabError
from compressor.paths import REPO
from compressor.runs.context import JobContext, dict_json, failure_message
from compressor.runs.lifecycle import RunBook
from compressor.runs.limits import check_payload_size
from compressor.runs.store import CANCELLED, INTERRUPTED, QUEUED, SUCCEEDED
from compressor.runs.worker import resolve_target

log = logging.getLogger(__name__)

INSTALL_HINT = ("Ray is not installed here: `pip install 'ray==2.60.0'` (an 80 MB wheel, about 250 MB installed, "
                "under a minute), or run the sweep on this machine's workers (leave out --ray and LAB_RAY_ADDRESS)")
POLL_S = 0.25
PROGRESS_EVERY_S = 0.5  # a task sends at most this often, and at every change of stage
CELL_FOLDER = "lab-ray-cell-"  # + the worker's pid: a cell's artifact folder in the worker's temp folder
# What a remote cluster gets of this checkout to run the lab (Ray's working_dir; assets included).
# gitignore-style: a leading "/" anchors a pattern at the checkout's root ("runs" alone would drop compressor/runs).
CODE_EXCLUDES = ["/.git", "/tests", "/docs", "/benchmarks", "/data", "/runs", "/tmp", "/.venv", "*.sqlite3",
                 "__pycache__"]


def require_ray():
    """The `ray` module, or a LabError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LabError(INSTALL_HINT) from None
    return ray


class RayExecutor:
    """Sweep cells as Ray tasks on the cluster at `address` (see the module docstring).

    Args:
        manager: the JobManager whose run store, artifact folder and artifact policy record the cells.
        address: "auto" (a running cluster), "ray://host:port", or "local" (start Ray in this process).
            When Ray is already initialised in this process (a test's `ray.init`), that cluster is used.
        cpus_per_cell: CPUs each task reserves (its torch threads).
        max_retries: times Ray reruns a cell whose worker process died.
        target: the job target each task runs ("package.module:function"); None: the runner's.
        keep_models: send the compressed model's folder back for download (subject to the artifact policy).
        ship_code: give the cluster this checkout (Ray's working_dir) when connecting to it; None: when
            the address is not "local".
    """

    def __init__(self, manager, address: str = "auto", *, cpus_per_cell: int = 2, max_retries: int = 1,
                 target: str | None = None, keep_models: bool = True, ship_code: bool | None = None):
        ray = require_ray()
        from ray.util.queue import Queue

        from compressor.runs.runner import TARGET  # torch and the measurements: only where Ray is asked for

        if isinstance(cpus_per_cell, bool) or not isinstance(cpus_per_cell, int) or cpus_per_cell < 1:
            raise LabError(f"cpus_per_cell={cpus_per_cell!r} is not valid: use an integer >= 1")
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ship = address != "local" if ship_code is None else ship_code
            env = {"working_dir": str(REPO), "excludes": CODE_EXCLUDES} if ship else None
            try:
                ray.init(address=None if address == "local" else address, runtime_env=env,
                         include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise LabError(f"cannot reach the Ray cluster at {address!r} ({type(e).__name__}: {str(e)[:200]}); "
                               "check LAB_RAY_ADDRESS (e.g. auto, ray://head:10001) or leave it unset to run here; a "
                               "cluster with token authentication (Ray 2.60's default) also needs RAY_AUTH_MODE=token "
                               "and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)") from None
        self.ray, self.address = ray, address
        self.cpus_per_cell, self.max_retries, self.target = cpus_per_cell, max_retries, target or TARGET
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < cpus_per_cell:
            raise LabError(f"the Ray cluster has {cpus} CPU(s); a cell asks for {cpus_per_cell}: lower cpus_per_cell")
        self.slots, self.max_in_flight = max(1, cpus // cpus_per_cell), None  # Ray queues the rest
        self.name = f"ray ({address}, {self.slots} at once)"
        self.manager = manager
        self._ship_limit = manager.artifacts.max_run_bytes if keep_models else 0
        self._cond = threading.Condition(threading.RLock())
        self._book = RunBook(manager.store, manager.artifact_root, manager.artifacts, self._cond)
        self._events = Queue(actor_options={"num_cpus": 0})
        self._task = ray.remote(_ray_cell)
        self._refs: dict = {}  # ObjectRef -> run id
        self._seed: dict[str, dict] = {}  # baseline cache entries cells measured, sent to later cells
        self._seed_ref = None
        self._pids: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._cancelled: dict[str, str] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._pump, name="ray-sweep-results", daemon=True)
        self._thread.start()

    # -- the executor interface ------------------------------------------------------------------

    def submit(self, payload: dict, owner: str) -> str:
        payload_json = dict_json(payload, "the payload")
        check_payload_size(payload_json)
        device = str(payload.get("device", "cpu"))
        with self._cond:
            if self._stopping:
                raise LabError("the Ray executor is shutting down; try again in a moment")
            live = self._book.open(owner, payload_json)
            if self._seed_ref is None:
                self._seed_ref = self.ray.put(dict(self._seed))
            options = dict(num_cpus=self.cpus_per_cell, num_gpus=1 if device.startswith("cuda") else 0,
                           max_retries=self.max_retries, retry_exceptions=False, name=f"lab-cell-{live.run_id}")
            ref = self._task.options(**options).remote(payload, live.run_id, self.target, self._events,
                                                       self._seed_ref, self._ship_limit)
            self._refs[ref] = live.run_id
        return live.run_id

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)  # results are read by this executor's own thread

    def cancel(self, run_id: str, reason: str) -> None:
        """Removes a queued cell from Ray's queue, or kills its worker process (`ray.cancel(force=True)`)."""
        with self._cond:
            ref = next((r for r, rid in self._refs.items() if rid == run_id), None)
            if ref is None:
                return
            self._cancelled[run_id] = reason
        self.ray.cancel(ref, force=True)

    def worker_pid(self, run_id: str) -> int | None:
        """The pid of the Ray worker process running the cell (its latest attempt); None before it starts."""
        with self._cond:
            return self._pids.get(run_id)

    def close(self) -> None:
        """Cancels the cells still going (they end interrupted), stops the thread; shuts Ray down if it
        was started here."""
        with self._cond:
            self._stopping = True
            refs = dict(self._refs)
        for ref in refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self._thread.join(10)
        with self._cond:
            for run_id in refs.values():
                live = self._book.live.get(run_id)
                if live is not None:
                    self._book.finish(live, INTERRUPTED, error="the app shut down before this cell finished")
        with contextlib.suppress(Exception):
            self._events.shutdown()
        if self._started_ray:
            self.ray.shutdown()

    # -- the app's side: events and results into the run store -----------------------------------

    def _pump(self) -> None:
        while not self._stopping:
            try:
                with self._cond:
                    refs = list(self._refs)
                ready = []
                if refs:
                    ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
                else:
                    time.sleep(POLL_S)
                self._drain()
                for ref in ready:
                    self._finish(ref)
            except Exception:  # a bug here must not stop every other cell's results
                log.exception("reading Ray results failed; going on")
                time.sleep(POLL_S)

    def _drain(self) -> None:
        n = self._events.qsize()
        for event in self._events.get_nowait_batch(n) if n else []:
            with self._cond:
                self._event(event)

    def _event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "cache":
            _, key, value = event
            self.manager.store.cache_put(key, value)
            self._seed[key], self._seed_ref = value, None
            return
        live = self._book.live.get(event[1])
        if live is None or live.finished:
            return
        if kind == "start":
            _, run_id, pid, node, _t = event
            self._pids[run_id] = pid
            self._attempts[run_id] = attempt = self._attempts.get(run_id, 0) + 1
            if live.status == QUEUED:
                self._book.start(live)
            where = f"Ray node {node}, worker pid {pid}"
            self._book.log(live, f"running on {where}" if attempt == 1 else
                           f"the previous Ray worker died; Ray retried this cell (attempt {attempt}) on {where}")
        elif kind == "progress":
            self._book.progress(live, event[2])
        elif kind == "log":
            self._book.log(live, event[3], event[2])

    def _finish(self, ref) -> None:
        with self._cond:
            run_id = self._refs.pop(ref)
            live = self._book.live[run_id]
        try:
            result = self.ray.get(ref)
        except Exception as e:
            with self._cond:
                self._failed(live, e)
            return
        folder = self.manager.artifact_root / run_id
        if result.get("files"):
            with tarfile.open(fileobj=io.BytesIO(result["files"]), mode="r") as tar:
                tar.extractall(folder, filter="data")  # noqa: S202 - the data filter refuses links and absolute paths
        with self._cond:
            if live.status == QUEUED:  # it finished before its start event was read
                self._book.start(live)
            for line in result.get("notes", []):
                self._book.log(live, line)
            self._book.finish(live, SUCCEEDED, report=result["report"])

    def _failed(self, live, e: Exception) -> None:
        exc = self.ray.exceptions
        attempts = self._attempts.get(live.run_id, 0)
        if live.run_id in self._cancelled:
            self._book.finish(live, CANCELLED, error=self._cancelled[live.run_id])
        elif isinstance(e, exc.RayTaskError):  # the cell's own error, raised inside the task
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
            message = failure_message(cause) if cause is not None else str(e).splitlines()[0][:300]
            self._book.failed(live, message, "" if isinstance(cause, LabError) else str(e))
        elif isinstance(e, exc.OutOfMemoryError):
            self._book.failed(live, "the Ray node ran out of memory running this cell; try a smaller model, fewer "
                              "evaluation samples or more memory per cell", str(e))
        elif isinstance(e, exc.WorkerCrashedError | exc.NodeDiedError | exc.ActorDiedError):
            self._book.failed(live, f"the Ray worker process running this cell died, on attempt {attempts} of "
                              f"{self.max_retries + 1} (max_retries={self.max_retries}); the other cells go on", str(e))
        else:
            self._book.failed(live, f"Ray could not run this cell ({type(e).__name__}: {str(e)[:300]})", str(e))


# --- inside the Ray worker ---------------------------------------------------------------------------


class _TaskCache:
    """A task's baseline cache: entries the app sent (`seed`), and new ones sent back to the app."""

    def __init__(self, seed: dict, events):
        self.seed, self.events = dict(seed or {}), events

    def get(self, key: str) -> dict | None:
        return self.seed.get(key)

    def put(self, key: str, value: dict) -> None:
        self.seed[key] = value
        _send(self.events, ("cache", key, value))


def _send(events, item: tuple) -> None:
    with contextlib.suppress(Exception):  # the app may be gone: the cell still finishes its work
        events.put(item, timeout=30)


def _ray_cell(payload: dict, run_id: str, target: str, events, seed: dict, ship_limit: int) -> dict:
    """One cell, inside a Ray worker: `target(payload, ctx)` with progress and log sent through `events`;
    returns {"report", "files" (the artifact folder as tar bytes, or None), "notes"}."""
    import ray

    _send(events, ("start", run_id, os.getpid(), ray.get_runtime_context().get_node_id()[:8] or socket.gethostname(),
                   time.time()))
    last = {"stage": None, "at": 0.0}

    def progress(p: dict) -> None:
        now = time.monotonic()
        if p.get("stage") != last["stage"] or now - last["at"] >= PROGRESS_EVERY_S:
            last.update(stage=p.get("stage"), at=now)
            _send(events, ("progress", run_id, p))

    _remove_orphan_cell_folders()
    folder = Path(tempfile.mkdtemp(prefix=f"{CELL_FOLDER}{os.getpid()}-"))
    try:
        ctx = JobContext(run_id=run_id, artifact_dir=folder, cache=_TaskCache(seed, events), on_progress=progress,
                         on_log=lambda line: _send(events, ("log", run_id, time.time(), line)))
        report = resolve_target(target)(payload, ctx)
        dict_json(report, f"the report returned by job target {target!r}")
        files, notes = _pack(folder, ship_limit)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"report": report, "files": files, "notes": notes}


def _remove_orphan_cell_folders() -> None:
    """Removes the cell folders of worker processes that are gone: a killed worker never runs its `finally`."""
    for folder in Path(tempfile.gettempdir()).glob(f"{CELL_FOLDER}*-*"):
        pid = folder.name[len(CELL_FOLDER):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _pack(folder: Path, limit: int) -> tuple[bytes | None, list[str]]:
    """The folder as tar bytes when it holds something within `limit` bytes."""
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size == 0 or limit == 0:
        return None, []
    if size > limit:
        return None, [f"the compressed model ({size / 2**30:.2f} GB) is larger than the artifact cap; it was not "
                      "sent back from the Ray worker"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue(), []
