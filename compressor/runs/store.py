"""The run store: one SQLite file (WAL) in the data folder holding run history and the baseline cache.

Only the standard library is imported here: the worker process opens the store for the baseline
cache before it has loaded torch, and the app opens it from Gradio's threads. Runs come back as
`RunRecord`s; `RunRecord.load_report()` imports the run contract (and so torch) only when called.

Tables
    runs            one row per submitted job: what was asked (model spec, recipe, hardware profile,
                    evaluation settings, the whole payload), where it stands (status, timestamps,
                    last progress event), what came out (report JSON, error message, log tail,
                    artifact folder).
    baseline_cache  measurements of an uncompressed model, keyed by the caller
                    (model + evaluation settings), so each run does not measure the baseline again.

Schema 2 added `runs.shared` (the owner showed the run in the shared gallery); a schema-1 file gets the
column when it is opened. A file SQLite cannot read is refused with a `StoreDamaged` that says how to
recover, and is never changed or deleted here.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.errors import LabError
from compressor.paths import default_data_dir
from compressor.runs.storefile import DB_NAME, SCHEMA_VERSION, StoreDamaged, StoreError, open_database  # noqa: F401

if TYPE_CHECKING:  # the contract imports the engine and torch: loaded by load_report only
    from compressor.runs.contract import Report

# Status values of a run. A run ends in one of FINAL_STATUSES and never leaves it.
QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
LOG_MAX_CHARS = 200_000  # the log column keeps the tail: a runaway log must not bloat the history
_JSON_COLUMNS = ("recipe", "eval_settings", "payload", "progress", "report")


def _dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _first(payload: dict, *keys: str) -> object:
    for key in keys:
        if payload.get(key) is not None:
            return payload[key]
    return None


@dataclass(frozen=True)
class RunRecord:
    """One run as stored: what was asked, where it stands, what came out.

    JSON cells arrive parsed. One damaged cell (a torn write, a hand edit) reads as None and the
    run's `error` names it, so it cannot hide the rest of the history.

    Attributes:
        id, owner, status: the run's id, who submitted it, one of STATUSES.
        seq: submission order across the store (increasing).
        model_spec, hardware: as the payload gave them (a hardware value that is not a string as JSON text).
        recipe: the payload's recipe as given: a preset name, a list of stages or a dict; None if absent.
        eval_settings: the payload's evaluation settings (its "eval" mapping), or None.
        payload: exactly what the job target received (None only when its cell is damaged).
        created_at, started_at, finished_at: `time.time()` stamps, None until reached.
        progress: the latest progress event (`compressor.runs.context.progress_dict`), or None.
        report: the report as stored JSON, or None; `load_report()` gives the typed `Report`.
        error: why the run did not succeed, and which cells are damaged; None when neither.
        log: the run's log (its last LOG_MAX_CHARS characters).
        artifact_path: the folder kept for download (a compressed model), or None.
        shared: the owner chose to show this run in the shared gallery (`JobManager.set_shared`).
        position: filled by `JobManager.get_run`: 1 = next in the queue, 0 = running; None otherwise.
        partial: True when listed with `include_report=False`: the report and log were not read.
    """

    id: str
    owner: str
    status: str
    seq: int
    payload: dict | None
    created_at: float
    model_spec: str | None = None
    recipe: str | list | dict | None = None
    hardware: str | None = None
    eval_settings: dict | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict | None = None
    report: dict | None = None
    error: str | None = None
    log: str = ""
    artifact_path: str | None = None
    shared: bool = False
    position: int | None = None
    partial: bool = False

    @property
    def finished(self) -> bool:
        """The run ended (in one of FINAL_STATUSES) and will not change again."""
        return self.status in FINAL_STATUSES

    def load_report(self) -> Report | None:
        """The typed report (`compressor.runs.contract.Report`), reports of older schemas upgraded.

        None when the run has no report: it did not succeed, or its report cell was damaged (then
        `error` says so). Raises LabError, naming the run, when a stored report cannot be read as a
        Report (a newer schema, a shape no upgrade knows); ValueError for a record listed without
        its report (`partial`): read it with `get_run(id)`.
        """
        if self.partial:
            raise ValueError(f"run {self.id} was listed with include_report=False; read it with get_run({self.id!r})")
        if self.report is None:
            return None
        from compressor.runs.contract import Report

        try:
            return Report.from_dict(self.report)
        except LabError as e:
            raise LabError(f"the report of run {self.id} cannot be read: {e}") from e
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # a shape the contract does not know
            raise LabError(
                f"the report of run {self.id} does not fit the report contract ({type(e).__name__}: {e}); "
                "open it with the version of the lab that wrote it, or delete the run"
            ) from e


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))


class RunStore:
    """Runs and baseline cache in `data_dir/runs.sqlite3`. Thread-safe: one connection behind a lock.

    Several processes may open the same file (the app and its workers): WAL lets readers go on while
    one writes, and a process killed mid-write leaves the database intact (SQLite's journal).
    """

    def __init__(self, data_dir: str | Path | None = None, *, check: bool = False):
        """`check`: also run SQLite's quick_check on an existing file (the job manager does, at start-up;
        workers opening the file for the baseline cache do not)."""
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"data folder {str(self.data_dir)!r} cannot be created ({e.strerror or e}); "
                             "set LAB_DATA_DIR to a writable folder") from None
        self.path = self.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = open_database(self.path, check=check)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- runs ------------------------------------------------------------------------------------

    def create_run(self, owner: str, payload: dict, run_id: str | None = None) -> str:
        """Adds a queued run; returns its id. The payload must be JSON (it is stored as text)."""
        run_id = run_id or uuid.uuid4().hex[:12]
        row = {
            "id": run_id,
            "owner": owner,
            "model_spec": _first(payload, "model", "model_spec"),
            "recipe": _dumps(_first(payload, "recipe")),
            "hardware": _first(payload, "hardware", "hardware_profile"),
            "eval_settings": _dumps(_first(payload, "eval", "eval_settings", "evaluation")),
            "payload": json.dumps(payload),
            "status": QUEUED,
            "created_at": time.time(),
        }
        if row["model_spec"] is not None:
            row["model_spec"] = str(row["model_spec"])
        if row["hardware"] is not None and not isinstance(row["hardware"], str):
            row["hardware"] = json.dumps(row["hardware"])
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._lock, self._db:
            self._db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", row)
        return run_id

    def update_run(self, run_id: str, **fields: object) -> None:
        """Sets columns of one run. JSON columns take Python values; `log` keeps its tail only."""
        if not fields:
            return
        values = {}
        for key, value in fields.items():
            if key in _JSON_COLUMNS:
                value = _dumps(value)
            elif key == "log" and isinstance(value, str) and len(value) > LOG_MAX_CHARS:
                value = "...(earlier lines dropped)\n" + value[-LOG_MAX_CHARS:]
            values[key] = value
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self._lock, self._db:
            self._db.execute(f"UPDATE runs SET {sets} WHERE id = :_id", {**values, "_id": run_id})

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._record(row)

    def list_runs(
        self,
        owner: str | None = None,
        status: str | tuple[str, ...] | None = None,
        limit: int | None = 100,
        include_report: bool = True,
        shared: bool | None = None,
        visible_to: str | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first; filtered by owner, status, `shared` (the gallery: True) and `visible_to`
        (a visitor's view: their own runs and the shared ones). `include_report=False` skips the report
        and log (records marked `partial`), for a long history that needs neither."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if shared is not None:
            where.append("shared = ?")
            args.append(int(bool(shared)))
        if visible_to is not None:
            where.append("(owner = ? OR shared = 1)")
            args.append(visible_to)
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        cols = "*" if include_report else "seq, id, owner, model_spec, recipe, hardware, eval_settings, " \
            "payload, status, created_at, started_at, finished_at, progress, error, artifact_path, shared"
        sql = f"SELECT {cols} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._record(r) for r in rows]

    def set_shared(self, run_id: str, shared: bool) -> bool:
        """Shows (or hides) a run in the shared gallery; False for an unknown id."""
        with self._lock, self._db:
            cur = self._db.execute("UPDATE runs SET shared = ? WHERE id = ?", (int(bool(shared)), run_id))
        return cur.rowcount > 0

    def prune_runs(self, keep_last: int | None = None, max_age_s: float | None = None) -> list[str]:
        """Deletes finished runs beyond the newest `keep_last` and those finished more than `max_age_s`
        ago; queued and running runs are never touched. Returns the deleted ids (their artifact folders
        are the caller's to remove)."""
        finished = tuple(FINAL_STATUSES)
        marks = ", ".join("?" * len(finished))
        doomed: set[str] = set()
        with self._lock, self._db:
            if keep_last is not None:
                doomed |= {r[0] for r in self._db.execute(
                    f"SELECT id FROM runs WHERE status IN ({marks}) ORDER BY seq DESC LIMIT -1 OFFSET ?",
                    (*finished, int(keep_last)))}
            if max_age_s is not None:
                cutoff = time.time() - max_age_s
                doomed |= {r[0] for r in self._db.execute(
                    f"SELECT id FROM runs WHERE status IN ({marks}) AND COALESCE(finished_at, created_at) < ?",
                    (*finished, cutoff))}
            self._db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in doomed])
        return sorted(doomed)

    def delete_run(self, run_id: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        return cur.rowcount > 0

    def mark_unfinished(self, status: str = INTERRUPTED, error: str = "") -> list[str]:
        """Ends every queued or running run (left by a process that stopped); returns their ids."""
        with self._lock, self._db:
            ids = [r[0] for r in self._db.execute(
                "SELECT id FROM runs WHERE status IN (?, ?) ORDER BY seq", (QUEUED, RUNNING))]
            self._db.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE status IN (?, ?)",
                (status, error, time.time(), QUEUED, RUNNING),
            )
        return ids

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        # One damaged cell (a torn write, a hand edit) must not hide the whole history: it reads as
        # None and the run's error says which column could not be read.
        cells = {k: row[k] for k in row.keys() if k in _RECORD_FIELDS}
        for key in _JSON_COLUMNS:
            if cells.get(key) is not None:
                try:
                    cells[key] = json.loads(cells[key])
                except ValueError:
                    cells[key] = None
                    note = f"the stored {key} of this run is not valid JSON and was ignored"
                    cells["error"] = f"{cells['error']}; {note}" if cells.get("error") else note
        cells["shared"] = bool(cells.get("shared") or 0)
        return RunRecord(**cells, partial="report" not in cells)

    # -- baseline cache --------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM baseline_cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError:  # a damaged entry is a miss: the caller measures again and overwrites it
            return None

    def cache_put(self, key: str, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"baseline cache values are dicts (stored as JSON), got {type(value).__name__}")
        text = json.dumps(value)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO baseline_cache (key, value, created_at) VALUES (?, ?, ?)",
                (key, text, time.time()),
            )

    def cache_prune(self, keep_last: int | None = None, max_age_s: float | None = None) -> int:
        """Deletes baseline cache entries beyond the newest `keep_last` and those older than `max_age_s`;
        returns how many. A pruned entry is a miss: the next run measures that baseline again."""
        n = 0
        with self._lock, self._db:
            if max_age_s is not None:
                n += self._db.execute("DELETE FROM baseline_cache WHERE created_at < ?",
                                      (time.time() - max_age_s,)).rowcount
            if keep_last is not None:
                n += self._db.execute("DELETE FROM baseline_cache WHERE key NOT IN (SELECT key FROM baseline_cache "
                                      "ORDER BY created_at DESC LIMIT ?)", (int(keep_last),)).rowcount
        return n

    def cache_clear(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM baseline_cache").rowcount

    # -- health ----------------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's own check of the file: "ok" when intact."""
        with self._lock:
            return "\n".join(r[0] for r in self._db.execute("PRAGMA integrity_check"))
