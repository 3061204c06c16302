"""Running sweeps: cells handed to an executor in grid order, the baseline shared, progress, cancel.

    sweeps = Sweeps(manager)                  # the page's job manager; Ray if LAB_RAY_ADDRESS is set
    sweep_id = sweeps.start(SweepSpec.build("demo", "w4-g128,int8,hqq-w4-g64"), owner=visitor)
    sweeps.progress(sweep_id).line()          # "1/3 done, 1 running, 1 queued, 0 failed, about 40 s left"
    sweeps.cells(sweep_id)                    # CellRecords, each with its run (report, status) once it has one
    sweeps.cancel(sweep_id, owner=visitor)

One thread per running sweep (`SweepRun`) hands its cells over and follows them through the run store;
the executor runs them (compressor.runs.sweep_exec). The baseline is measured once per model and
evaluation setting: the first cell of each such group goes alone, and the others of the group are handed
over only once its progress is past the baseline (its quality is then in the baseline cache, so they
read it instead of measuring it again). Cells of other groups start meanwhile.

A cell cancelled from outside the sweep (its owner cancelling that run, or leaving the page, which
cancels their runs) stops the sweep: the rest of its cells are cancelled too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from compressor.errors import LabError
from compressor.runs.store import CANCELLED, RunRecord
from compressor.runs.sweep import PAST_BASELINE, Cell, CellState, SweepProgress, SweepSpec, sweep_progress
from compressor.runs.sweep_store import (
    SWEEP_CANCELLED,
    SWEEP_FINISHED,
    SWEEP_INTERRUPTED,
    CellRecord,
    SweepRecord,
    SweepStore,
)

log = logging.getLogger(__name__)

POLL_S = 0.25
FINISHED_KEPT = 1024  # finished runs' records kept in memory for grids (each holds its report)
SUBMIT_PATIENCE_S = 600.0  # a queue that keeps refusing cells this long (nothing of ours running) ends the sweep


class SweepRun:
    """The thread of one sweep: hands `cells` to `executor` (at most `max_in_flight` unfinished at once,
    groups gated on their first cell's baseline), reads their runs from the store, ends the sweep."""

    def __init__(self, store: SweepStore, sweep_id: str, cells: list[Cell], executor, owner: str,
                 read: Callable[[str], RunRecord | None]):
        self.store, self.sweep_id, self.executor, self.owner, self.read = store, sweep_id, executor, owner, read
        self.pending = list(cells)
        self.in_flight: dict[str, Cell] = {}
        self.leaders: dict[str, str] = {}  # group -> the run that measures its baseline
        self.released: set[str] = set()
        self.done = threading.Event()
        self._cancel: str | None = None
        self._cancel_sent: set[str] = set()
        self._refused_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name=f"sweep-{sweep_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self, reason: str) -> None:
        self._cancel = self._cancel or reason

    def _loop(self) -> None:
        status, error = SWEEP_FINISHED, None
        try:
            while self.pending or self.in_flight:
                if self._cancel:
                    self._cancel_all()
                else:
                    self._hand_over()
                time.sleep(POLL_S)
                self._read()
            if self._cancel:
                status, error = SWEEP_CANCELLED, self._cancel
        except Exception as e:  # a bug or a store that went away: the sweep ends, its cells keep their runs
            log.exception("sweep %s failed", self.sweep_id)
            status, error = SWEEP_INTERRUPTED, f"the sweep stopped: {type(e).__name__}: {e}"
            with contextlib.suppress(Exception):
                for cell in self.pending:
                    self.store.cancel_cell(self.sweep_id, cell.index, error)
        finally:
            with contextlib.suppress(Exception):
                self.store.finish(self.sweep_id, status, error)
            self.done.set()

    def _hand_over(self) -> None:
        for cell in list(self.pending):
            limit = self.executor.max_in_flight
            if limit is not None and len(self.in_flight) >= limit:
                return
            group = cell.group
            if group in self.leaders and group not in self.released:
                continue  # waits for its group's baseline
            try:
                run_id = self.executor.submit(cell.payload, self.owner)
            except LabError as e:  # a full queue (the job manager's limits): try again next round
                now = time.monotonic()
                self._refused_since = self._refused_since or now
                if not self.in_flight and now - self._refused_since > SUBMIT_PATIENCE_S:
                    self.cancel(f"the executor refused this sweep's cells for {SUBMIT_PATIENCE_S:.0f} s: {e}")
                return
            self._refused_since = None
            self.store.submitted(self.sweep_id, cell.index, run_id)
            self.pending.remove(cell)
            self.in_flight[run_id] = cell
            self.leaders.setdefault(group, run_id)

    def _cancel_all(self) -> None:
        for cell in self.pending:
            self.store.cancel_cell(self.sweep_id, cell.index, self._cancel)
        self.pending.clear()
        for run_id in set(self.in_flight) - self._cancel_sent:
            self._cancel_sent.add(run_id)
            with contextlib.suppress(LabError):
                self.executor.cancel(run_id, self._cancel)

    def _read(self) -> None:
        for run_id, cell in list(self.in_flight.items()):
            run = self.read(run_id)
            if run is None:  # deleted meanwhile
                self.in_flight.pop(run_id)
                self.released.add(cell.group)
                continue
            stage = (run.progress or {}).get("stage")
            if self.leaders.get(cell.group) == run_id and (stage in PAST_BASELINE or run.finished):
                self.released.add(cell.group)
            if run.finished:
                self.in_flight.pop(run_id)
                if run.status == CANCELLED and run_id not in self._cancel_sent:
                    self.cancel(f"cell {cell.index + 1} ({cell.model} x {cell.recipe_label}) was cancelled from "
                                f"outside the sweep ({run.error or 'no reason given'}); the sweep stopped")


class Sweeps:
    """The sweeps of one job manager's run store: start, follow, cancel.

    Args:
        manager: the JobManager whose run store records every cell (and whose worker pool runs them
            locally); with an `executor`, any `RunPlace` (store, artifact folder, policy) will do.
        executor: where cells run; default `make_executor(manager, ray)`: Ray when `ray` or
            LAB_RAY_ADDRESS names a cluster, else the manager's workers.
        check_models: check every model and recipe against each other before a sweep starts
            (config only, compressor.models.preflight); off for a cluster whose models this machine lacks.
    """

    def __init__(self, manager, executor=None, ray: str | None = None, check_models: bool | None = None, **ray_options):
        from compressor.runs.sweep_exec import LocalExecutor, make_executor

        self.manager = manager
        self.store = SweepStore(manager.store)
        self.executor = executor or make_executor(manager, ray, **ray_options)
        self.check_models = isinstance(self.executor, LocalExecutor) if check_models is None else check_models
        self._live: dict[str, SweepRun] = {}
        self._lock = threading.Lock()
        self._runs_read: dict[str, RunRecord] = _Finished()  # finished runs never change: read once
        # a JobManager's get_run adds a running run's live progress (the store has it a second later)
        self.read = getattr(manager, "get_run", None) or manager.store.get_run
        orphans = self.store.mark_orphans("the app stopped before this sweep finished; start it again")
        if orphans:
            log.warning("marked %d sweep(s) of a stopped process as interrupted", len(orphans))

    def start(self, spec: SweepSpec, owner: str) -> str:
        """Checks the sweep (every cell's request; with `check_models`, each model and recipe on the
        model's shapes), records it and starts handing its cells over; returns its id."""
        if not isinstance(owner, str) or not owner.strip():
            raise LabError(f"owner={owner!r} is not valid: give the session or user id as a non-empty string")
        cells = spec.cells()
        if self.check_models:
            preflight_cells(cells)
        sweep_id = self.store.create(owner, spec.to_dict(), cells, self.executor.name, self.executor.slots)
        run = SweepRun(self.store, sweep_id, cells, self.executor, owner, self.read)
        with self._lock:
            self._live[sweep_id] = run
        run.start()
        return sweep_id

    def get(self, sweep_id: str, viewer: str | None = None) -> SweepRecord | None:
        """The sweep; with `viewer`, None unless it is theirs."""
        sweep = self.store.get(sweep_id) if isinstance(sweep_id, str) else None
        return None if sweep is None or (viewer is not None and sweep.owner != viewer) else sweep

    def cells(self, sweep_id: str) -> list[CellRecord]:
        return self.store.cells(sweep_id, self._runs_read, self.read)

    def progress(self, sweep_id: str) -> SweepProgress:
        sweep = self.store.get(sweep_id)
        if sweep is None:
            raise LabError(f"no sweep {str(sweep_id)[:40]!r}")
        return cells_progress(self.cells(sweep_id), sweep.slots)

    def cancel(self, sweep_id: str, owner: str | None = None, reason: str = "sweep cancelled") -> bool:
        """Cancels the sweep's waiting and running cells (finished ones keep their reports); False when it
        is not running in this process. With `owner`, only that owner's sweep."""
        sweep = self.get(sweep_id)
        if sweep is None or (owner is not None and sweep.owner != owner):
            raise LabError(f"no sweep {str(sweep_id)[:40]!r} of yours")
        with self._lock:
            run = self._live.get(sweep_id)
        if run is None or run.done.is_set():
            return False
        run.cancel(reason)
        return True

    def ended(self, sweep_id: str, timeout: float = 0.0) -> bool:
        """True once the sweep has ended (waiting up to `timeout` s for it); a sweep not running in this
        process has ended."""
        with self._lock:
            run = self._live.get(sweep_id)
        return run is None or run.done.wait(timeout)

    def wait(self, sweep_id: str, timeout: float | None = None) -> SweepProgress:
        """Blocks until the sweep has ended; its progress then. TimeoutError after `timeout` s."""
        with self._lock:
            run = self._live.get(sweep_id)
        if run is not None and not run.done.wait(timeout):
            raise TimeoutError(f"sweep {sweep_id} is still running after {timeout} s")
        return self.progress(sweep_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancels the sweeps still running here, waits for them to end, closes the executor."""
        with self._lock:
            runs = list(self._live.values())
        for run in runs:
            run.cancel("the app shut down before this sweep finished")
        for run in runs:
            run.done.wait(timeout)
        self.executor.close()


class _Finished(OrderedDict):
    """Finished runs read for grids, the oldest forgotten past FINISHED_KEPT."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if len(self) > FINISHED_KEPT:
            self.popitem(last=False)


def cells_progress(cells: list[CellRecord], slots: int) -> SweepProgress:
    """A sweep's progress from its cells as stored."""
    states = []
    for c in cells:
        run = c.run
        fraction = (run.progress or {}).get("fraction") if run is not None else None
        states.append(CellState(c.status, run.started_at if run else None, run.finished_at if run else None,
                                fraction))
    return sweep_progress(states, slots)


def preflight_cells(cells: list[Cell]) -> int:
    """Each model's config and each recipe on its shapes, before any weight loads (one check per
    model and recipe); a LabError names the cell. Returns the largest model's parameter count."""
    from compressor.models.preflight import preflight

    seen, largest = set(), 0
    for cell in cells:
        key = (cell.model, repr(cell.payload["recipe"]))
        if key in seen:
            continue
        seen.add(key)
        try:
            largest = max(largest, preflight(cell.model, cell.payload["recipe"]).n_params)
        except LabError as e:
            raise LabError(f"sweep cell {cell.model} x {cell.recipe_label}: {e}") from None
    return largest
