"""The life of a run, in one place: opened (queued), started (running), progress and log, finished.

Every run goes through a `RunBook`, wherever its target runs: in a worker process (the manager's
queue) or in the app's own process (`JobManager.run_inline`, the ZeroGPU path). Each step is written
to the store and kept in memory as events for a live view:

    open  -> status queued, a row in the store
    start -> status running, started_at
    progress / log -> the latest progress (flushed to the store at most every PROGRESS_FLUSH_S) and log lines
    partial -> the latest partial report (kept in memory only), announced by a "partial" event
    finish -> the artifact folder settled, the final row written (or, if the store refuses it, the run
              recorded as failed with the reason), artifacts pruned after a success

A RunBook belongs to one JobManager and is used with the manager's lock held; its `cond` is notified
at every event so that waiters (`wait`, `events`) wake.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compressor.errors import LabError
from compressor.runs import artifacts
from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.context import BaselineCache, JobContext, dict_json, failure_message
from compressor.runs.retention import RetentionClock
from compressor.runs.store import FAILED, FINAL_STATUSES, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED, RunStore

log = logging.getLogger(__name__)

PROGRESS_FLUSH_S = 1.0  # progress snapshots reach the store at most this often per run
MAX_EVENTS_PER_RUN = 5000  # events kept in memory for a live view; older ones are dropped
LIVE_FINISHED_KEPT = 200  # finished runs whose in-memory events stay readable


@dataclass
class LiveRun:
    """In-memory state of a run opened in this process."""

    run_id: str
    owner: str
    payload_json: str
    inline: bool = False  # runs in the caller's thread (run_inline): nothing can stop it from outside
    status: str = QUEUED
    progress: dict | None = None
    events: list[dict] = field(default_factory=list)
    dropped: int = 0  # events dropped from the front of `events`
    log_lines: list[str] = field(default_factory=list)
    started: float | None = None  # time.monotonic() at start
    cancel_requested: str | None = None  # the error the run ends with once the scheduler stops it
    partial_json: str | None = None  # the latest partial report (Report.to_dict() as JSON) while it runs
    last_flush: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class RunBook:
    """The runs of one manager, recorded step by step in memory and in `store`."""

    def __init__(self, store: RunStore, artifact_root: Path, policy: ArtifactPolicy, cond: threading.Condition):
        self.store, self.artifact_root, self.policy, self._cond = store, artifact_root, policy, cond
        self.live: dict[str, LiveRun] = {}
        self._finished_order: deque[str] = deque()
        self.retention = RetentionClock(None)  # set by the manager that holds the data folder

    def unfinished(self, owner: str | None = None) -> list[LiveRun]:
        return [r for r in self.live.values() if not r.finished and (owner is None or r.owner == owner)]

    def open(self, owner: str, payload_json: str, inline: bool = False) -> LiveRun:
        run_id = self.store.create_run(owner, json.loads(payload_json))
        live = LiveRun(run_id, owner, payload_json, inline=inline)
        self.live[run_id] = live
        self.event(live, {"kind": "status", "status": QUEUED})
        return live

    def start(self, live: LiveRun) -> None:
        live.status, live.started = RUNNING, time.monotonic()
        self.store.update_run(live.run_id, status=RUNNING, started_at=time.time())
        self.event(live, {"kind": "status", "status": RUNNING})

    def progress(self, live: LiveRun, p: dict) -> None:
        """Records a progress event (a `progress_dict`); its message goes to the log too."""
        if live.finished:
            return
        live.progress = p
        self.event(live, {"kind": "progress", **p})
        if p.get("message"):
            self.log(live, p["message"], p.get("time"))
        if time.monotonic() - live.last_flush >= PROGRESS_FLUSH_S:
            live.last_flush = time.monotonic()
            self.store.update_run(live.run_id, progress=live.progress, log="\n".join(live.log_lines))

    def partial(self, live: LiveRun, report_json: str) -> None:
        """Keeps the latest partial report; the event names the sections still `pending` in it."""
        if live.finished:
            return
        live.partial_json = report_json
        try:
            pending = json.loads(report_json).get("pending", [])
        except (ValueError, AttributeError):
            pending = []
        self.event(live, {"kind": "partial", "pending": pending})

    def failed(self, live: LiveRun, message: str, trace: str) -> None:
        """Ends the run failed with `message`. A traceback (none for bad input) goes to the app's log,
        not to the run's log that visitors read."""
        if trace:
            log.warning("run %s failed: %s\n%s", live.run_id, message, trace.rstrip())
            self.log(live, "the run failed (the app's log has the details for the operator)")
        self.finish(live, FAILED, error=message)

    def log(self, live: LiveRun, line: str, t: float | None = None) -> None:
        if live.finished:
            return
        live.log_lines.append(line)
        self.event(live, {"kind": "log", "message": line, "time": t or time.time()})

    def finish(self, live: LiveRun, status: str, report: dict | None = None, error: str | None = None) -> None:
        """Ends the run with `status`; a run already ended (a cancel, a shutdown) stays as it ended."""
        if live.finished:
            return
        artifact, note = artifacts.settle(self.artifact_root / live.run_id, status == SUCCEEDED, self.policy)
        if note:
            live.log_lines.append(note)
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
        live.status, live.partial_json = status, None
        self.event(live, {"kind": "status", "status": status, "error": error})
        self._finished_order.append(live.run_id)
        while len(self._finished_order) > LIVE_FINISHED_KEPT:
            old = self._finished_order.popleft()
            if old in self.live and self.live[old].finished:
                del self.live[old]
        if status == SUCCEEDED and artifact is not None:
            self.prune()
        self.retain()

    def retain(self, force: bool = False) -> None:
        """Applies the retention policy (at most every `every_s` unless forced); never fails a run."""
        try:
            gone = self.retention.maybe(self.store, self.artifact_root, force=force)
        except Exception:
            log.exception("applying the retention policy failed; history is kept as it is")
            return
        if gone and any(gone.values()):
            log.info("retention: deleted %(runs)d old run(s) and %(cache_entries)d baseline cache entries", gone)
            for run_id in [r for r, live in self.live.items() if live.finished]:
                if self.store.get_run(run_id) is None:
                    del self.live[run_id]

    def run_here(self, live: LiveRun, fn: Callable, cache: BaselineCache) -> None:
        """Runs `fn(payload, ctx)` in the calling thread for a started inline run and ends it
        (`JobManager.run_inline`). Called without the lock; takes it for each step."""
        def step(method: Callable, *args) -> None:
            with self._cond:
                method(live, *args)

        art = self.artifact_root / live.run_id
        ctx = JobContext(run_id=live.run_id, artifact_dir=art, cache=cache,
                         on_progress=lambda p: step(self.progress, p), on_log=lambda line: step(self.log, line),
                         on_partial=lambda text: step(self.partial, text))
        try:
            art.mkdir(parents=True, exist_ok=True)
            report = json.loads(dict_json(fn(json.loads(live.payload_json), ctx), "the report returned by the job"))
        except Exception as e:
            step(self.failed, failure_message(e), "" if isinstance(e, LabError) else traceback.format_exc())
        except BaseException as e:  # Ctrl-C, SystemExit: the app is stopping; the run must still end
            step(self.finish, INTERRUPTED, None, f"the app stopped while this run ran ({failure_message(e)})")
            raise
        else:
            step(self.finish, SUCCEEDED, report)

    def prune(self) -> None:
        """Applies the artifact policy, sparing the folders of runs still going."""
        artifacts.prune(self.store, self.artifact_root, self.policy, busy={r.run_id for r in self.unfinished()})

    def forget(self, run_id: str) -> None:
        self.live.pop(run_id, None)

    def event(self, live: LiveRun, event: dict) -> None:
        event.setdefault("time", time.time())
        event["index"] = live.dropped + len(live.events)
        live.events.append(event)
        if len(live.events) > MAX_EVENTS_PER_RUN:
            drop = len(live.events) - MAX_EVENTS_PER_RUN
            del live.events[:drop]
            live.dropped += drop
        self._cond.notify_all()
