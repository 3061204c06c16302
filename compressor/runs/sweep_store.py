"""Sweeps in the run store's SQLite file: which runs belong to which sweep, and where each sweep stands.

Each cell of a sweep is an ordinary run in the `runs` table (same report, history, artifacts); these two
tables only tag them:

    sweeps       one row per sweep: owner, its spec (JSON), the executor that ran it, how many cells run
                 at once, status (running, finished, cancelled, interrupted), times.
    sweep_cells  one row per cell: its place in the grid (model, recipe label, evaluation label), its
                 payload, and its run id once the sweep handed it to an executor; `state` is "waiting"
                 before that, "submitted" after, or "cancelled" for a cell the sweep never ran.

A cell's status is its run's status once it has one (`compressor.runs.store`), else its state. Only the
standard library is imported, like the run store.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compressor.runs.store import CANCELLED, RunRecord, RunStore
from compressor.runs.storefile import DB_NAME, open_database

SWEEP_RUNNING, SWEEP_FINISHED, SWEEP_CANCELLED, SWEEP_INTERRUPTED = "running", "finished", "cancelled", "interrupted"
SUBMITTED = "submitted"
DELETED = "deleted"  # a submitted cell whose run was deleted since (by its owner, or by retention)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    spec        TEXT NOT NULL,     -- JSON: SweepSpec.to_dict()
    executor    TEXT NOT NULL,     -- "local (2 at once)", "ray (ADDRESS)"
    slots       INTEGER NOT NULL,  -- cells that run at once
    status      TEXT NOT NULL,
    process     TEXT NOT NULL,     -- host:pid of the process driving it (a dead one's sweeps are interrupted)
    error       TEXT,
    created_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS sweeps_owner ON sweeps(owner, created_at);
CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep_id     TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    model        TEXT NOT NULL,
    recipe_label TEXT NOT NULL,
    eval_label   TEXT NOT NULL,
    payload      TEXT NOT NULL,    -- JSON: the run's payload
    run_id       TEXT,             -- the run, once submitted
    state        TEXT NOT NULL,    -- waiting / submitted / cancelled
    error        TEXT,
    PRIMARY KEY (sweep_id, idx)
);
CREATE INDEX IF NOT EXISTS sweep_cells_run ON sweep_cells(run_id);
"""


@dataclass(frozen=True)
class SweepRecord:
    id: str
    owner: str
    spec: dict
    executor: str
    slots: int
    status: str
    created_at: float
    error: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class CellRecord:
    """One cell as stored, with its run (None while waiting or for a cell that never ran)."""

    sweep_id: str
    index: int
    model: str
    recipe_label: str
    eval_label: str
    payload: dict
    run_id: str | None
    state: str
    error: str | None = None
    run: RunRecord | None = None

    @property
    def status(self) -> str:
        """The run's status, or the cell's own state (waiting, cancelled) when it has no run."""
        if self.run is not None:
            return self.run.status
        return DELETED if self.run_id is not None else self.state


class SweepStore:
    """The sweep tables in `data_dir/runs.sqlite3`, beside the runs they tag. Thread-safe."""

    def __init__(self, runs: RunStore):
        self.runs = runs
        self.path: Path = runs.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = open_database(self.path)  # the runs' schema, WAL; then the sweep tables beside it
        with self._db:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, owner: str, spec: dict, cells: list, executor: str, slots: int) -> str:
        """Records a new sweep and its cells (all waiting); returns its id."""
        sweep_id = "sw-" + uuid.uuid4().hex[:9]
        rows = [(sweep_id, c.index, c.model, c.recipe_label, c.eval_label, json.dumps(c.payload), "waiting")
                for c in cells]
        with self._lock, self._db:
            self._db.execute("INSERT INTO sweeps (id, owner, spec, executor, slots, status, process, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (sweep_id, owner, json.dumps(spec), executor, slots,
                                                                 SWEEP_RUNNING, _this_process(), time.time()))
            self._db.executemany("INSERT INTO sweep_cells (sweep_id, idx, model, recipe_label, eval_label, payload, "
                                 "state) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return sweep_id

    def submitted(self, sweep_id: str, index: int, run_id: str) -> None:
        self._set_cell(sweep_id, index, run_id=run_id, state=SUBMITTED)

    def cancel_cell(self, sweep_id: str, index: int, error: str) -> None:
        """Ends a cell that never ran (the sweep was cancelled before its turn, or it could not be handed over)."""
        self._set_cell(sweep_id, index, state=CANCELLED, error=error)

    def _set_cell(self, sweep_id: str, index: int, **values) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock, self._db:
            self._db.execute(f"UPDATE sweep_cells SET {sets} WHERE sweep_id = ? AND idx = ?",
                             (*values.values(), sweep_id, index))

    def finish(self, sweep_id: str, status: str, error: str | None = None) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE sweeps SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                             (status, error, time.time(), sweep_id))

    def get(self, sweep_id: str) -> SweepRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return None if row is None else _sweep(row)

    def list(self, owner: str | None = None, limit: int = 50) -> list[SweepRecord]:
        """Sweeps, newest first (one owner's with `owner`)."""
        sql, args = "SELECT * FROM sweeps", []
        if owner is not None:
            sql, args = sql + " WHERE owner = ?", [owner]
        with self._lock:
            rows = self._db.execute(sql + f" ORDER BY created_at DESC LIMIT {int(limit)}", args).fetchall()
        return [_sweep(r) for r in rows]

    def cells(self, sweep_id: str, runs: dict[str, RunRecord] | None = None,
              read: Callable[[str], RunRecord | None] | None = None) -> list[CellRecord]:
        """The sweep's cells in grid order, each with its run, read by `read` (default: the run store's
        `get_run`; a JobManager's adds the live progress of a running run). `runs` holds records already
        read (finished runs never change): those are not read again, and new finished ones are added."""
        read = read or self.runs.get_run
        with self._lock:
            rows = self._db.execute("SELECT * FROM sweep_cells WHERE sweep_id = ? ORDER BY idx", (sweep_id,)).fetchall()
        out = []
        for r in rows:
            run = None
            if r["run_id"] is not None:
                run = (runs or {}).get(r["run_id"])
                if run is None or not run.finished:
                    run = read(r["run_id"])
                    if runs is not None and run is not None and run.finished:
                        runs[run.id] = run
            out.append(CellRecord(sweep_id, r["idx"], r["model"], r["recipe_label"], r["eval_label"],
                                  json.loads(r["payload"]), r["run_id"], r["state"], r["error"], run))
        return out

    def sweep_of(self, run_id: str) -> tuple[str, int] | None:
        """(sweep id, cell index) of a run that is a sweep's cell; None for a run of its own."""
        with self._lock:
            row = self._db.execute("SELECT sweep_id, idx FROM sweep_cells WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def mark_orphans(self, error: str) -> list[str]:
        """Ends sweeps left running by a process of this host that is gone: status interrupted, waiting
        cells cancelled (their runs, if any, are the job manager's to mark). Returns their ids."""
        host = socket.gethostname()
        with self._lock, self._db:
            rows = self._db.execute("SELECT id, process FROM sweeps WHERE status = ?", (SWEEP_RUNNING,)).fetchall()
            ids = [r[0] for r in rows if r[1].rpartition(":")[0] == host and not _alive(r[1].rpartition(":")[2])]
            for sweep_id in ids:
                self._db.execute("UPDATE sweeps SET status = ?, error = ?, finished_at = ? WHERE id = ?",
                                 (SWEEP_INTERRUPTED, error, time.time(), sweep_id))
                self._db.execute("UPDATE sweep_cells SET state = ?, error = ? WHERE sweep_id = ? AND state = 'waiting'",
                                 (CANCELLED, error, sweep_id))
        return ids


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):  # someone else's process, or not a pid: leave it alone
        return True
    return True


def _sweep(row) -> SweepRecord:
    return SweepRecord(id=row["id"], owner=row["owner"], spec=json.loads(row["spec"]), executor=row["executor"],
                       slots=row["slots"], status=row["status"], created_at=row["created_at"], error=row["error"],
                       finished_at=row["finished_at"])
