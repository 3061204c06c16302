"""How long run history and baseline measurements are kept: the policy and applying it.

The job manager that holds the data folder applies it at start-up and then at most every `every_s`
after a run ends: finished runs beyond the newest `keep_runs`, or older than `run_days`, are deleted
with their artifact folders; baseline cache entries beyond the newest `cache_entries`, or older than
`cache_days`, are dropped (the next run measures that baseline again). Queued and running runs are
never touched. None switches a bound off.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from compressor.runs.store import RunStore

DAY_S = 86_400.0


@dataclass
class Retention:
    """What the run store keeps.

    Args:
        keep_runs: at most this many finished runs (newest first); None for no count limit.
        run_days: finished runs older than this many days are deleted; None for no age limit.
        cache_entries: at most this many baseline cache entries (newest first); None for no limit.
        cache_days: baseline entries older than this many days are dropped; None for no age limit.
        every_s: the shortest time between two applications while the app runs.
    """

    keep_runs: int | None = 2000
    run_days: float | None = 90.0
    cache_entries: int | None = 200
    cache_days: float | None = 30.0
    every_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("keep_runs", "run_days", "cache_entries", "cache_days", "every_s"):
            value = getattr(self, name)
            if value is None and name != "every_s":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Retention.{name}={value!r} is not valid: use a number >= 0"
                                 + ("" if name == "every_s" else ", or None for no limit"))

    def apply(self, store: RunStore, artifact_root: Path) -> dict[str, int]:
        """Deletes what the policy does not keep; returns how many runs and cache entries went."""
        gone = store.prune_runs(self.keep_runs, _seconds(self.run_days))
        for run_id in gone:
            shutil.rmtree(Path(artifact_root) / run_id, ignore_errors=True)
        dropped = store.cache_prune(self.cache_entries, _seconds(self.cache_days))
        return {"runs": len(gone), "cache_entries": dropped}


def _seconds(days: float | None) -> float | None:
    return None if days is None else days * DAY_S


class RetentionClock:
    """Applies a Retention at most every `every_s` (the manager calls `maybe` after each run ends)."""

    def __init__(self, policy: Retention | None):
        self.policy, self._last = policy, float("-inf")

    def maybe(self, store: RunStore, artifact_root: Path, force: bool = False) -> dict[str, int] | None:
        if self.policy is None:
            return None
        now = time.monotonic()
        if not force and now - self._last < self.policy.every_s:
            return None
        self._last = now
        return self.policy.apply(store, artifact_root)
