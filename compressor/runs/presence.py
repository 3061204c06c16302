"""Which visitors are still here: the job manager lets go of the runs of a visitor who left.

The page tells the manager what it knows: `touch(owner)` whenever a visitor's page shows a sign of life
(a page load, a poll while a run streams, a timer), `left(owner)` when the visitor's last tab closed
(Gradio's unload event). A visitor is *away* when they left more than `grace_s` ago without coming
back (a reload comes back within seconds), or, with `idle_s` set, when nothing was heard from them for
that long (a browser that vanished without an unload). The job manager's scheduler asks `away()` about
once a second and cancels the unfinished runs of those visitors, so one visitor cannot hold the queue
after leaving.

Owners the page never touched (the CLI, scripts using the manager directly) are never away.
"""

from __future__ import annotations

import threading
import time

MAX_TRACKED = 100_000  # visitors remembered at once; the oldest are forgotten first


class Presence:
    """Last sign of life per owner; thread-safe.

    Args:
        grace_s: a visitor who left is away after this many seconds (None: leaving cancels nothing).
        idle_s: a visitor not heard from for this many seconds is away too (None: no heartbeat needed).
    """

    def __init__(self, grace_s: float | None = None, idle_s: float | None = None):
        for name, value in (("grace_s", grace_s), ("idle_s", idle_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name}={value!r} is not valid: use seconds >= 0, or None")
        self.grace_s, self.idle_s = grace_s, idle_s
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, bool]] = {}  # owner -> (monotonic time, still here)

    def touch(self, owner: str) -> None:
        """The visitor is here now."""
        self._set(owner, True)

    def left(self, owner: str) -> None:
        """The visitor's page closed; their runs go after `grace_s` unless they come back (`touch`)."""
        self._set(owner, False)

    def forget(self, owner: str) -> None:
        with self._lock:
            self._seen.pop(owner, None)

    def seen(self, owner: str) -> tuple[float, bool] | None:
        """(seconds since the last sign, still here) or None for an owner never touched."""
        with self._lock:
            entry = self._seen.get(owner)
        return None if entry is None else (time.monotonic() - entry[0], entry[1])

    def away(self) -> dict[str, str]:
        """Owners who are away now -> why, in words for the run's error."""
        now, out = time.monotonic(), {}
        with self._lock:
            entries = list(self._seen.items())
        for owner, (t, here) in entries:
            if not here and self.grace_s is not None and now - t >= self.grace_s:
                out[owner] = f"its visitor left the page more than {self.grace_s:g} s ago"
            elif self.idle_s is not None and now - t >= self.idle_s:
                out[owner] = f"nothing was heard from its visitor's page for {self.idle_s:g} s"
        return out

    def _set(self, owner: str, here: bool) -> None:
        with self._lock:
            self._seen.pop(owner, None)  # re-inserted last: the dict stays ordered oldest first
            self._seen[owner] = (time.monotonic(), here)
            while len(self._seen) > MAX_TRACKED:
                self._seen.pop(next(iter(self._seen)))
