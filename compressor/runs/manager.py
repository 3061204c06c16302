"""The job manager: a FIFO queue across sessions, worker processes, cancel, time limits, run history.

    manager = JobManager(data_dir, target="compressor.runs.runner:run_job", concurrency=1, time_limit_s=900)
    run_id = manager.submit({"model": "demo", "recipe": [...]}, owner=visitor_id)
    manager.position(run_id)          # 1 = next in the queue, 0 = running, None = finished
    manager.events(run_id, since=0)   # status, progress, log and "partial" events, for a polling UI
    manager.partial_report(run_id)    # the latest partial Report dict while it runs (quality, then speed)
    manager.cancel(run_id, owner)     # kills the worker mid-computation and starts a fresh one
    manager.wait(run_id, timeout=60)  # the finished run: a RunRecord (status, report, error, log)
    manager.run_inline(payload, owner, fn)  # runs fn(payload, ctx) here instead (ZeroGPU), recorded alike

Visitors: every run has an `owner`; `list_runs(visible_to=owner)` is a visitor's view (their runs and
the shared ones), `get_run(id, viewer=owner)` hides other visitors' unshared runs, `set_shared` puts a
run in the gallery. `touch(owner)` / `left(owner)` tell the manager who is still here: runs of a
visitor who left are cancelled after `owner_grace_s` (compressor.runs.presence); `cancel_owner` at once.

A queued job runs `target(payload, ctx) -> dict` in a worker process (`compressor.runs.worker`,
multiprocessing "spawn"), never in the app's process, so a crash or an out-of-memory kill ends only
that job. One background thread in the app process hands queued runs to idle workers, reads their
messages, enforces cancels and time limits. Every run, queued or inline, is recorded by the same
`RunBook` (`compressor.runs.lifecycle`) in the SQLite run store (`compressor.runs.store`). Every
public method is thread-safe, so Gradio handlers may call them from any thread.

Runs left queued or running by a previous process are marked interrupted at start-up, by the one
manager that holds the data folder's lock (`compressor.runs.lock`).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import multiprocessing
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from compressor.errors import LabError
from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.context import BaselineCache, JobContext, dict_json
from compressor.runs.lifecycle import LiveRun, RunBook
from compressor.runs.limits import check_payload_size
from compressor.runs.lock import FolderLock
from compressor.runs.presence import Presence
from compressor.runs.retention import Retention, RetentionClock
from compressor.runs.scheduler import Scheduler
from compressor.runs.store import (
    CANCELLED,
    FINAL_STATUSES,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    RunRecord,
    RunStore,
)
from compressor.runs.worker import NAME_PREFIX, target_spec

log = logging.getLogger(__name__)

DEFAULT_TARGET = "compressor.runs.runner:run_job"  # RunRequest JSON -> Report JSON


class JobManager:
    """Runs job targets in worker processes, in submission order, and records every run.

    Args:
        data_dir: folder of the run store and artifacts; default `compressor.paths.default_data_dir()`.
        target: "package.module:function" (or such a function) called as `target(payload, ctx) -> dict`.
        concurrency: number of worker processes, i.e. jobs running at once.
        time_limit_s: a job running longer is stopped and ends failed; None for no limit.
        artifacts: what happens to files a job leaves in `ctx.artifact_dir`.
        max_queued_per_owner: submissions beyond this many unfinished runs per owner are refused.
        max_queued: submissions beyond this many unfinished runs in all are refused (a bounded queue).
        owner_grace_s, owner_idle_s: when a visitor's runs are let go (compressor.runs.presence.Presence).
        retention: how much run history and baseline cache is kept (compressor.runs.retention).
        check_payload: called as `check_payload(payload)` before a submission is stored (e.g. the
            runner's `check_payload`); its LabError refuses the submission.
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
        max_queued: int | None = None,
        owner_grace_s: float | None = None,
        owner_idle_s: float | None = None,
        retention: Retention | None = None,
        check_payload: Callable[[dict], object] | None = None,
    ):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r} is not valid: use an integer >= 1")
        if time_limit_s is not None and not time_limit_s > 0:
            raise ValueError(f"time_limit_s={time_limit_s!r} is not valid: use seconds > 0, or None for no limit")
        self.target = target_spec(target)
        self.concurrency = concurrency
        self.time_limit_s = time_limit_s
        self.artifacts = artifacts or ArtifactPolicy()
        self.max_queued_per_owner, self.max_queued = max_queued_per_owner, max_queued
        self.presence = Presence(owner_grace_s, owner_idle_s)
        self._check_payload = check_payload
        self.store = RunStore(data_dir, check=True)
        self.data_dir = self.store.data_dir
        self.artifact_root = self.data_dir / "artifacts"
        self.artifact_root.mkdir(exist_ok=True)

        self._cond = threading.Condition(threading.RLock())  # guards the run book and the scheduler
        self._runs = RunBook(self.store, self.artifact_root, self.artifacts, self._cond)
        self._sched = Scheduler(self._runs, self._cond, target=self.target, data_dir=self.data_dir,
                                artifact_root=self.artifact_root, concurrency=concurrency, time_limit_s=time_limit_s,
                                sweep=self._let_go_of_away_owners)
        self._lock = FolderLock(self.data_dir)

        # Spawn re-imports the parent's main module in each child; if that module (app.py) builds a
        # JobManager at import time, the copy inside a worker must stay inert.
        self._inert = multiprocessing.current_process().name.startswith(NAME_PREFIX)
        if self._inert:
            return
        if self._lock.acquire():
            ids = self.store.mark_unfinished(
                INTERRUPTED, "the app stopped (restart or crash) before this run finished; submit it again"
            )
            if ids:
                log.warning("marked %d unfinished run(s) from a previous process as interrupted", len(ids))
            self._runs.retention = RetentionClock(retention)
            self._runs.retain(force=True)
            self._runs.prune()
        else:
            log.warning("another process manages jobs in %s; not touching its unfinished runs", self.data_dir)
        self._sched.start()
        ref = weakref.ref(self)

        def _shutdown_at_exit() -> None:
            manager = ref()
            if manager is not None:
                manager.shutdown()

        self._atexit = _shutdown_at_exit
        atexit.register(self._atexit)

    # -- submitting and running ------------------------------------------------------------

    def submit(self, payload: dict, owner: str) -> str:
        """Queues a job; returns its run id. The payload must be a JSON-serialisable dict within
        `limits.MAX_PAYLOAD_BYTES`; `check_payload` (when given) runs first, outside the lock."""
        if self._check_payload is not None:
            self._check_payload(payload)
        with self._cond:
            live = self._open(payload, owner)
            self._sched.queue.append(live.run_id)
        self._sched.wake()
        return live.run_id

    def run_inline(self, payload: dict, owner: str, fn: Callable[[dict, JobContext], dict]) -> RunRecord:
        """Runs `fn(payload, ctx)` in the calling thread and returns the finished run, recorded as a
        queued run is: same store row, events, artifact settling and pruning, error messages.

        For hosts where the work must run in the app's own process (ZeroGPU lends a GPU to a
        decorated function of the app). It starts at once, beside the queue; `ctx.artifact_dir` and
        `ctx.cache` are the run's own, progress and log calls become its events. Nothing can stop it
        from outside: `cancel` refuses it and the time limit does not apply.
        """
        with self._cond:
            live = self._open(payload, owner, inline=True)
            self._runs.start(live)
        self._runs.run_here(live, fn, BaselineCache(self.store))
        return self.get_run(live.run_id)

    def _open(self, payload: dict, owner: str, inline: bool = False) -> LiveRun:
        """Checks a submission and records it as queued (called with the lock held)."""
        if self._inert:
            raise RuntimeError("this JobManager was built inside a worker process and runs nothing")
        if not isinstance(owner, str) or not owner.strip():
            raise LabError(f"owner={owner!r} is not valid: give the session or user id as a non-empty string")
        if len(owner) > MAX_OWNER_CHARS:
            raise LabError(f"owner has {len(owner)} characters; the limit is {MAX_OWNER_CHARS}")
        payload_json = dict_json(payload, "the payload")
        check_payload_size(payload_json)
        if self._sched.stopping:
            raise LabError("the job manager is shutting down; try again in a moment")
        if self.max_queued_per_owner is not None:
            mine = len(self._runs.unfinished(owner))
            if mine >= self.max_queued_per_owner:
                raise LabError(
                    f"you already have {mine} runs queued or running (the limit is "
                    f"{self.max_queued_per_owner} per visitor); wait for one to finish or cancel one"
                )
        if self.max_queued is not None and len(self._runs.unfinished()) >= self.max_queued:
            raise LabError(f"the queue is full ({self.max_queued} runs queued or running, the limit for "
                           "everyone); try again in a few minutes")
        if self.presence.seen(owner) is not None:  # a submission is a sign of life of a tracked visitor
            self.presence.touch(owner)
        return self._runs.open(owner, payload_json, inline=inline)

    # -- where runs stand ------------------------------------------------------------------

    def status(self, run_id: str) -> str | None:
        """queued / running / succeeded / failed / cancelled / interrupted; None for an unknown id."""
        with self._cond:
            live = self._runs.live.get(run_id)
            if live is not None:
                return live.status
        run = self.store.get_run(run_id)
        return None if run is None else run.status

    def position(self, run_id: str) -> int | None:
        """1-based place in the queue (1 = next to start), 0 while running, None when not waiting."""
        with self._cond:
            live = self._runs.live.get(run_id)
            if live is None or live.finished:
                return None
            if live.status == RUNNING:
                return 0
            try:
                return self._sched.queue.index(run_id) + 1
            except ValueError:  # being handed to a worker right now
                return 0

    def queue(self) -> list[dict]:
        """Queued runs in order: run_id, owner, position (no payloads: other users' settings stay private)."""
        with self._cond:
            return [
                {"run_id": rid, "owner": self._runs.live[rid].owner, "position": i + 1}
                for i, rid in enumerate(self._sched.queue)
            ]

    def cancel(self, run_id: str, owner: str | None = None, reason: str | None = None) -> bool:
        """Cancels a queued or running run (a running one within about a second: its worker is killed and
        a fresh one takes the next run); False if already over. With `owner`, only that owner's run
        (LabError otherwise). `reason` becomes the run's error."""
        with self._cond:
            live = self._runs.live.get(run_id)
            if owner is not None:
                stored = self.store.get_run(run_id) if live is None else None
                if live is None and stored is None:
                    raise LabError(f"no run {str(run_id)[:40]!r} of yours is queued or running")
                _check_owner(live.owner if live is not None else stored.owner, owner, run_id)
            if live is None or live.finished:
                return False
            if live.inline:
                raise LabError(f"run {run_id} runs inside the app's own process (ZeroGPU) and cannot be "
                               "cancelled; it ends by itself within the GPU time limit")
            if run_id in self._sched.queue:
                self._sched.queue.remove(run_id)
                self._runs.finish(live, CANCELLED, error=reason or "cancelled before it started")
                return True
            live.cancel_requested = reason or "cancelled while running"
        self._sched.wake()
        return True

    def cancel_owner(self, owner: str, reason: str | None = None) -> list[str]:
        """Cancels every queued or running run of `owner` (not inline ones); returns their ids."""
        with self._cond:
            ids = [r.run_id for r in self._runs.unfinished(owner) if not r.inline]
            for run_id in ids:
                self.cancel(run_id, reason=reason)
        return ids

    # -- visitors ----------------------------------------------------------------------------

    def touch(self, owner: str) -> None:
        """`owner`'s page shows a sign of life (a load, a poll, a timer): their runs are kept."""
        self.presence.touch(owner)

    def left(self, owner: str) -> None:
        """`owner`'s last page closed: their unfinished runs are cancelled after `owner_grace_s` unless
        they come back (`touch`) before then."""
        self.presence.left(owner)

    def _let_go_of_away_owners(self) -> None:
        """The scheduler's sweep (about once a second): cancels the runs of visitors who are away."""
        for owner, why in self.presence.away().items():
            if self.cancel_owner(owner, reason=f"cancelled: {why}"):
                log.info("cancelled the runs of a visitor who is away (%s)", why)
            self.presence.forget(owner)

    def set_shared(self, run_id: str, owner: str, shared: bool = True) -> None:
        """Shows (or hides) `owner`'s finished run in the shared gallery; LabError for someone else's
        run, an unknown id or a run that has no report to show."""
        run = self.store.get_run(run_id)
        if run is None or run.owner != owner:
            raise LabError(f"no run {str(run_id)[:40]!r} of yours: you can only share your own runs")
        if shared and run.status != SUCCEEDED:
            raise LabError(f"run {run_id} is {run.status}: only a finished run with results can be shared")
        self.store.set_shared(run_id, bool(shared))

    def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Blocks until the run is over; returns `get_run(run_id)`. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                live = self._runs.live.get(run_id)
                if live is None or live.finished:
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
                live = self._runs.live.get(run_id)
                if live is None:
                    return []
                end = live.dropped + len(live.events)
                if end > since or live.finished:
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

    def partial_report(self, run_id: str) -> dict | None:
        """The latest partial report of a running run (`Report.to_dict()` with `pending` sections),
        None when it has sent none or is over (the finished report is `get_run(run_id).report`)."""
        with self._cond:
            live = self._runs.live.get(run_id)
            text = live.partial_json if live is not None and not live.finished else None
        return json.loads(text) if text else None

    def latest_progress(self, run_id: str) -> dict | None:
        with self._cond:
            live = self._runs.live.get(run_id)
            if live is not None:
                return live.progress
        run = self.store.get_run(run_id)
        return None if run is None else run.progress

    def get_run(self, run_id: str, viewer: str | None = None) -> RunRecord | None:
        """The stored run, with its `position` and, while it runs, its live status, progress and log.
        With `viewer`, None unless the run is theirs or shared (other visitors' runs stay private)."""
        run = self.store.get_run(run_id)
        if run is None or (viewer is not None and run.owner != viewer and not run.shared):
            return None
        with self._cond:
            live = self._runs.live.get(run_id)
            if live is not None and not live.finished:
                run = dataclasses.replace(run, status=live.status, progress=live.progress,
                                          log="\n".join(live.log_lines))
        return dataclasses.replace(run, position=self.position(run_id))

    def list_runs(
        self, owner: str | None = None, status: str | tuple[str, ...] | None = None, limit: int | None = 100,
        include_report: bool = True, shared: bool | None = None, visible_to: str | None = None,
    ) -> list[RunRecord]:
        """Stored runs, newest first: `owner=` a visitor's own, `shared=True` the gallery, `visible_to=`
        a visitor's view (their own and the shared ones)."""
        return self.store.list_runs(owner=owner, status=status, limit=limit, include_report=include_report,
                                    shared=shared, visible_to=visible_to)

    # -- housekeeping ----------------------------------------------------------------------

    def delete_run(self, run_id: str, owner: str | None = None) -> bool:
        """Deletes a finished run and its artifact; a queued or running run must be cancelled first."""
        with self._cond:
            run = self.store.get_run(run_id)
            if run is None:
                return False
            _check_owner(run.owner, owner, run_id)
            live = self._runs.live.get(run_id)
            if live is not None and not live.finished:
                raise LabError(f"run {run_id} is {live.status}; cancel it before deleting it")
            self._runs.forget(run_id)
            shutil.rmtree(self.artifact_root / run_id, ignore_errors=True)
            return self.store.delete_run(run_id)

    def prune_artifacts(self) -> None:
        """Applies the artifact policy now (it also runs after every run that keeps an artifact)."""
        with self._cond:
            self._runs.prune()

    def warm_up(self, timeout: float | None = None) -> bool:
        """Waits until all `concurrency` workers have started and can take a run at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while sum(w.ready for w in self._sched.workers) < self.concurrency:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._sched.stopping:
                    return False
                self._cond.wait(left)
            return True

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in self._sched.workers if w.process.pid is not None]

    def shutdown(self, timeout: float = 10.0, reason: str = "the app shut down before this run finished") -> None:
        """Stops the workers; queued and running runs end interrupted with `reason`. Safe to call twice."""
        with self._cond:
            already = self._sched.stopping
            self._sched.stopping = True
        if already or self._inert:
            return
        self._sched.stop(timeout)
        atexit.unregister(self._atexit)
        with self._cond:
            for live in self._runs.unfinished():
                self._runs.finish(live, INTERRUPTED, error=reason)
        self._lock.release()
        self.store.close()

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


MAX_OWNER_CHARS = 200  # an owner id (a visitor id, a session hash) is short


def _check_owner(run_owner: str, owner: str | None, run_id: str) -> None:
    if owner is not None and owner != run_owner:
        raise LabError(f"run {run_id} belongs to another session; you can only change your own runs")
