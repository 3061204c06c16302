"""The run store: one SQLite file (WAL) in the data folder holding run history and the baseline cache.

Only the standard library is imported here: the worker process opens the store for the baseline
cache before it has loaded torch, and the app opens it from Gradio's threads.

Tables
    runs            one row per submitted job: what was asked (model spec, recipe, hardware profile,
                    evaluation settings, the whole payload), where it stands (status, timestamps,
                    last progress event), what came out (report JSON, error message, log tail,
                    artifact folder).
    baseline_cache  measurements of an uncompressed model, keyed by the caller
                    (model + evaluation settings), so each run does not measure the baseline again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from compressor.paths import default_data_dir

# Status values of a run. A run ends in one of FINAL_STATUSES and never leaves it.
QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})

SCHEMA_VERSION = 1
DB_NAME = "runs.sqlite3"
BUSY_TIMEOUT_MS = 10_000  # another process (a worker, a second app) may hold the write lock briefly
OPEN_RETRY_S = 0.01, 0.2  # first and longest pause between tries to open a file another process is setting up
LOG_MAX_CHARS = 200_000  # the log column keeps the tail: a runaway log must not bloat the history

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id            TEXT NOT NULL UNIQUE,
    owner         TEXT NOT NULL,
    model_spec    TEXT,
    recipe        TEXT,        -- JSON
    hardware      TEXT,
    eval_settings TEXT,        -- JSON
    payload       TEXT NOT NULL,  -- JSON: exactly what the target received
    status        TEXT NOT NULL,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    progress      TEXT,        -- JSON: the latest Progress event
    report        TEXT,        -- JSON: the Report, on success
    error         TEXT,
    log           TEXT NOT NULL DEFAULT '',
    artifact_path TEXT
);
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, seq);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS baseline_cache (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,  -- JSON
    created_at REAL NOT NULL
);
"""

_JSON_COLUMNS = ("recipe", "eval_settings", "payload", "progress", "report")


def _dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _first(payload: dict, *keys: str) -> object:
    for key in keys:
        if payload.get(key) is not None:
            return payload[key]
    return None


class RunStore:
    """Runs and baseline cache in `data_dir/runs.sqlite3`. Thread-safe: one connection behind a lock.

    Several processes may open the same file (the app and its workers): WAL lets readers go on while
    one writes, and a process killed mid-write leaves the database intact (SQLite's journal).
    """

    def __init__(self, data_dir: str | Path | None = None):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"data folder {str(self.data_dir)!r} cannot be created ({e}); "
                "set LAB_DATA_DIR to a writable folder"
            ) from e
        self.path = self.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        deadline, pause = time.monotonic() + BUSY_TIMEOUT_MS / 1000, OPEN_RETRY_S[0]
        while True:
            try:
                self._set_up()
                return
            except sqlite3.OperationalError as e:
                # Two processes opening a new file at once: SQLite can refuse the second one's switch to
                # WAL with "database is locked" at once, without waiting on the busy timeout. Try again.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    self._db.close()
                    raise
                time.sleep(pause)
                pause = min(2 * pause, OPEN_RETRY_S[1])

    def _set_up(self) -> None:
        """WAL mode and the schema; every step is a no-op on a file already set up."""
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"run store {str(self.path)!r} has schema version {version}, newer than this code's "
                    f"{SCHEMA_VERSION}; update the lab or point LAB_DATA_DIR at another folder"
                )
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    def get_run(self, run_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._row(row)

    def list_runs(
        self,
        owner: str | None = None,
        status: str | tuple[str, ...] | None = None,
        limit: int | None = 100,
        include_report: bool = True,
    ) -> list[dict]:
        """Runs, newest first; filtered by owner and/or status."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        cols = "*" if include_report else "seq, id, owner, model_spec, recipe, hardware, eval_settings, " \
            "payload, status, created_at, started_at, finished_at, progress, error, artifact_path"
        sql = f"SELECT {cols} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._row(r) for r in rows]

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
    def _row(row: sqlite3.Row) -> dict:
        # One damaged cell (a torn write, a hand edit) must not hide the whole history: it reads as
        # None and the run's error says which column could not be read.
        out = dict(row)
        for key in _JSON_COLUMNS:
            if out.get(key) is not None:
                try:
                    out[key] = json.loads(out[key])
                except ValueError:
                    out[key] = None
                    note = f"the stored {key} of this run is not valid JSON and was ignored"
                    out["error"] = f"{out['error']}; {note}" if out.get("error") else note
        return out

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

    def cache_clear(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM baseline_cache").rowcount

    # -- health ----------------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's own check of the file: "ok" when intact."""
        with self._lock:
            return "\n".join(r[0] for r in self._db.execute("PRAGMA integrity_check"))
