"""SIGTERM handled like a stop: how a Space (and most process managers) ends a container.

Without a handler SIGTERM ends the process at once: no `atexit`, so the running run stays "running"
in the store until the next start marks it interrupted with a vaguer reason. `stop_on_sigterm(managers)`
installs a handler (main thread only, as Python requires) that shuts each manager down (its workers
stopped, its queued and running runs marked interrupted, its lock released), then exits the process
with status 143 (128 + SIGTERM) through SystemExit, so the rest of the app's clean-up runs too.

    managers = make_managers()
    stop_on_sigterm(*managers)
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

EXIT_SIGTERM = 128 + signal.SIGTERM


def stop_on_sigterm(*managers, exit: bool = True) -> bool:
    """Installs the SIGTERM handler for `managers` (JobManagers); False when not in the main thread
    (nothing installed). With `exit=False` the handler only stops the managers (for embedding)."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("SIGTERM handler not installed: only the main thread can install one")
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)  # a second one ends it
        log.warning("SIGTERM: stopping the job managers; runs still going are marked interrupted")
        for manager in managers:
            try:
                manager.shutdown(reason="the app was stopped (SIGTERM) while this run was going; submit it again")
            except Exception:  # one manager's failure must not keep the others' runs unmarked
                log.exception("shutting a job manager down on SIGTERM failed")
        if exit:
            raise SystemExit(EXIT_SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
