"""One job manager per data folder: an advisory lock on `<data folder>/jobs.lock`.

The manager that holds it decides what a previous process left unfinished (marks those runs
interrupted) and prunes artifacts at start-up; a second manager on the same folder (a second app
process) runs its own jobs but leaves the first one's runs alone. The operating system releases the
lock when its holder exits, however it exits.
"""

from __future__ import annotations

from pathlib import Path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, every manager acts as the only one
    fcntl = None

LOCK_NAME = "jobs.lock"


class FolderLock:
    """`acquire()` without waiting -> True when this process now holds the folder; `release()`."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> bool:
        if fcntl is None:
            return True
        if self._file is not None:
            return True
        f = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is held
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the flock
            self._file = None
