"""The run store's SQLite file: its schema, opening it (WAL, retries while another process sets it up,
upgrades of older files) and what a file that cannot be read becomes: a `StoreDamaged` that says what
is wrong and how to recover. Nothing here ever changes or deletes a file SQLite cannot read.

Standard library only, like the store (`compressor.runs.store`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from compressor.errors import LabError

SCHEMA_VERSION = 2  # 1: the first file; 2: runs.shared
DB_NAME = "runs.sqlite3"
BUSY_TIMEOUT_MS = 10_000  # another process (a worker, a second app) may hold the write lock briefly
OPEN_RETRY_S = 0.01, 0.2  # first and longest pause between tries to open a file another process is setting up

SCHEMA = """
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
    artifact_path TEXT,
    shared        INTEGER NOT NULL DEFAULT 0  -- 1: the owner shows it in the shared gallery
);
CREATE INDEX IF NOT EXISTS runs_owner ON runs(owner, seq);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS baseline_cache (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,  -- JSON
    created_at REAL NOT NULL
);
"""
# created after the upgrade below has added the column to a schema-1 file
_SHARED_INDEX = "CREATE INDEX IF NOT EXISTS runs_shared ON runs(shared, seq)"


class StoreError(LabError):
    """The run store cannot be used as it is (a newer schema, a damaged file); the message says what to do."""


class StoreDamaged(StoreError):
    """The run store's file cannot be read by SQLite. The message names the file, what SQLite said and
    how to recover; the file is left as it was."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(
            f"the run store {str(path)!r} is damaged ({problem}); it was left as it is. To recover, stop the "
            f"app and either move it aside (mv '{path}' '{path}.damaged') to start with an empty run history, "
            f"or salvage its rows with: sqlite3 '{path}' .recover | sqlite3 '{path}.recovered' (then move "
            "that file in its place); or point LAB_DATA_DIR at another folder"
        )


def open_database(path: Path, check: bool = False) -> sqlite3.Connection:
    """A connection to the store at `path`, set up (WAL, schema, upgrades). With `check`, SQLite's
    quick_check runs first on an existing file. StoreDamaged when SQLite cannot read the file."""
    existed = path.is_file() and path.stat().st_size > 0
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error as e:  # a folder where the file should be, no permission
        raise StoreDamaged(path, f"{type(e).__name__}: {e}") from None
    db.row_factory = sqlite3.Row
    deadline, pause = time.monotonic() + BUSY_TIMEOUT_MS / 1000, OPEN_RETRY_S[0]
    while True:
        try:
            _set_up(db, path, check and existed)
            return db
        except sqlite3.OperationalError as e:
            # Two processes opening a new file at once: SQLite can refuse the second one's switch to
            # WAL with "database is locked" at once, without waiting on the busy timeout. Try again.
            if "locked" not in str(e) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(pause)
            pause = min(2 * pause, OPEN_RETRY_S[1])
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            db.close()
            raise StoreDamaged(path, str(e)) from None
        except StoreError:
            db.close()
            raise


def _set_up(db: sqlite3.Connection, path: Path, check: bool) -> None:
    """WAL mode and the schema; every step is a no-op on a file already set up. With `check`, SQLite's
    quick_check first: a damaged page raises sqlite3.DatabaseError before anything is written."""
    if check:
        problems = [r[0] for r in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"run store {str(path)!r} has schema version {version}, newer than this code's "
                         f"{SCHEMA_VERSION}; update the lab or point LAB_DATA_DIR at another folder")
    with db:
        db.executescript(SCHEMA)
        if "shared" not in {r[1] for r in db.execute("PRAGMA table_info(runs)")}:  # a schema-1 file
            db.execute("ALTER TABLE runs ADD COLUMN shared INTEGER NOT NULL DEFAULT 0")
        db.execute(_SHARED_INDEX)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
