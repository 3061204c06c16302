"""The job manager's background thread: queued runs to idle worker processes, their messages to the
run book, cancels and time limits enforced, dead workers replaced.

One round (`_step`): keep `concurrency` workers started, hand the queue's head to each idle ready
worker, wait up to POLL_S for a message, a worker's death or a wake-up (a submit, a cancel), then
read every message, account for every death, and stop workers whose run was cancelled or ran out of
time. A worker that dies while idle is restarted with a back-off, so a broken install does not spin.

The scheduler shares the manager's lock and `RunBook`; everything but the wait runs with the lock held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from compressor.runs.lifecycle import RunBook
from compressor.runs.store import CANCELLED, FAILED, SUCCEEDED
from compressor.runs.worker import NAME_PREFIX, WorkerProcess

log = logging.getLogger(__name__)

POLL_S = 0.25  # the longest sleep; cancels and deaths wake the scheduler at once
STARTUP_FAILURES_FATAL = 3  # workers dying before "ready" this many times in a row fail the next run
RESTART_BACKOFF_S = 0.5, 30.0  # first and longest wait before replacing a worker that died idle
SWEEP_S = 1.0  # how often the manager's sweep runs (runs of visitors who left)


class Scheduler:
    """Hands `queue` (run ids, in order) to `concurrency` worker processes running `target`.

    Attributes:
        queue: run ids waiting, next first.
        workers: the worker processes, started or starting.
        stopping: set by `stop`; the thread ends at its next round.
    """

    def __init__(self, runs: RunBook, cond: threading.Condition, *, target: str, data_dir: Path,
                 artifact_root: Path, concurrency: int, time_limit_s: float | None,
                 sweep: Callable[[], None] | None = None):
        self.runs, self._cond = runs, cond
        self.target, self.data_dir, self.artifact_root = target, data_dir, artifact_root
        self.concurrency, self.time_limit_s = concurrency, time_limit_s
        self.queue: deque[str] = deque()
        self.workers: list[WorkerProcess] = []
        self.stopping = False
        self._mp = multiprocessing.get_context("spawn")
        self._wake_r, self._wake_w = self._mp.Pipe(duplex=False)
        self._wake_pending = False  # at most one byte in the wake pipe, so writers never block
        self._idle_deaths, self._restart_at = 0, 0.0
        self._sweep, self._next_sweep = sweep, 0.0  # e.g. cancelling the runs of visitors who left
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ends the current wait at once (after a submit or a cancel)."""
        with self._cond:
            if self._wake_pending:
                return
            self._wake_pending = True
            with contextlib.suppress(OSError):
                self._wake_w.send_bytes(b"x")

    def stop(self, timeout: float) -> None:
        """Ends the thread (waiting up to `timeout` s), then every worker: idle ones asked, busy ones killed."""
        with self._cond:
            self.stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # the thread is gone (or stuck): whatever is left ends here
            for w in list(self.workers):
                self._stop_worker(w, graceful=w.run_id is None)
            self.queue.clear()

    # -- one round ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # a bug here must not stop the queue for good
                log.exception("job scheduler step failed; going on")
                time.sleep(POLL_S)

    def _step(self) -> bool:
        with self._cond:
            if self.stopping:
                return False
            self._fill_pool()
            self._dispatch()
            waitables = [self._wake_r]
            for w in self.workers:
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
            for w in list(self.workers):
                self._drain(w)
            for w in list(self.workers):
                if not w.process.is_alive():
                    self._drain(w)
                    self._on_worker_death(w)
            self._enforce_limits()
            if self._sweep is not None and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + SWEEP_S
                self._sweep()
        return True

    def _fill_pool(self) -> None:
        if time.monotonic() < self._restart_at:
            return
        while len(self.workers) < self.concurrency and not self.stopping:
            self.workers.append(WorkerProcess(self._mp, str(self.data_dir), f"{NAME_PREFIX}-{len(self.workers)}",
                                              preload=self.target))

    def _dispatch(self) -> None:
        for w in self.workers:
            if not self.queue:
                return
            if w.run_id is not None or not w.ready or not w.process.is_alive():
                continue
            run_id = self.queue.popleft()
            live = self.runs.live[run_id]
            try:
                w.hand(run_id, self.target, live.payload_json, str(self.artifact_root / run_id))
            except OSError:  # the worker died while idle: the run waits for the next one
                self.queue.appendleft(run_id)
                continue
            self.runs.start(live)

    def _drain(self, w: WorkerProcess) -> None:
        for msg in w.messages():
            self._handle(w, msg)

    def _handle(self, w: WorkerProcess, msg: tuple) -> None:
        """One message of the pipe protocol (`compressor.runs.worker`)."""
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            self._cond.notify_all()
            return
        live = self.runs.live.get(msg[1])
        if live is None or live.finished:
            return
        if kind == "progress":
            self.runs.progress(live, msg[2])
        elif kind == "log":
            self.runs.log(live, msg[3], msg[2])
        elif kind == "partial":
            self.runs.partial(live, msg[2])
        elif kind == "done":
            w.run_id, self._idle_deaths = None, 0
            self.runs.finish(live, SUCCEEDED, report=json.loads(msg[2]))
        elif kind == "error":
            w.run_id, self._idle_deaths = None, 0
            self.runs.failed(live, msg[2], msg[3])

    def _on_worker_death(self, w: WorkerProcess) -> None:
        code = w.process.exitcode
        self.workers.remove(w)
        w.close()
        if w.run_id is None:
            # A worker that cannot even start (a broken import) would otherwise be restarted in a
            # tight loop: back off, up to half a minute, until a job gets through again.
            self._idle_deaths += 1
            first, longest = RESTART_BACKOFF_S
            delay = min(longest, first * 2 ** (self._idle_deaths - 1))
            self._restart_at = time.monotonic() + delay
            log.warning("an idle worker process exited with code %s; starting another in %.1f s", code, delay)
            if not w.ready and self._idle_deaths >= STARTUP_FAILURES_FATAL and self.queue:
                # Workers keep dying before they can run anything: fail the next run, not wait forever.
                self.runs.finish(
                    self.runs.live[self.queue.popleft()],
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
        self.runs.finish(self.runs.live[w.run_id], FAILED,
                         error=f"the worker process died ({how}) while running this job{hint}")

    def _enforce_limits(self) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            live = self.runs.live.get(w.run_id) if w.run_id else None
            if live is None:
                continue
            if live.cancel_requested:
                self._stop_worker(w, graceful=False)
                self.runs.finish(live, CANCELLED, error=live.cancel_requested)
            elif self.time_limit_s is not None and now - live.started > self.time_limit_s:
                self._stop_worker(w, graceful=False)
                self.runs.finish(
                    live,
                    FAILED,
                    error=f"stopped after the time limit of {self.time_limit_s:g} s; "
                    "choose a smaller model, a lighter recipe or fewer evaluation samples",
                )

    def _stop_worker(self, w: WorkerProcess, graceful: bool) -> None:
        w.stop(graceful)
        if w in self.workers:
            self.workers.remove(w)
