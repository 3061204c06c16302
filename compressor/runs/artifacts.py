"""Which compressed models stay on disk for download: the policy, what happens when a run ends, pruning.

Each run writes into `<data folder>/artifacts/<run id>/` (its `ctx.artifact_dir`). When it ends,
`settle` keeps the folder only for a run that succeeded and saved something within the per-run cap;
`prune` then keeps the newest `keep_last` such folders within the total cap, and deletes strays.
The store's `artifact_path` column says which folders are kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from compressor.runs.store import QUEUED, RUNNING, SUCCEEDED, RunStore


@dataclass
class ArtifactPolicy:
    """Which compressed models stay on disk for download.

    Args:
        keep_last: at most this many runs keep their artifacts (newest first).
        max_run_bytes: an artifact larger than this is deleted when its run ends (the run still succeeds;
            its log says why nothing can be downloaded).
        max_total_bytes: older artifacts are deleted until all kept ones fit in this many bytes.
    """

    keep_last: int = 5
    max_run_bytes: int = 4 * 2**30
    max_total_bytes: int = 10 * 2**30

    def __post_init__(self):
        for name in ("keep_last", "max_run_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ArtifactPolicy.{name}={value!r} is not valid: use an integer >= 0")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def settle(folder: Path, succeeded: bool, policy: ArtifactPolicy) -> tuple[str | None, str | None]:
    """What stays of a run's artifact folder as the run ends: (the kept folder or None, a line for the
    run's log or None). Only a succeeded run that saved something within `max_run_bytes` keeps one."""
    if not folder.exists():
        return None, None
    size = folder_bytes(folder) if succeeded else 0
    if not succeeded or size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return None, None
    if size > policy.max_run_bytes:
        shutil.rmtree(folder, ignore_errors=True)
        return None, (f"the compressed model ({_gb(size)}) is larger than the artifact cap of "
                      f"{_gb(policy.max_run_bytes)}; it was not kept for download")
    return str(folder), None


def prune(store: RunStore, root: Path, policy: ArtifactPolicy, busy: set[str]) -> None:
    """Keeps the newest `keep_last` artifacts within `max_total_bytes`; deletes strays. Folders of
    `busy` runs, and of runs the store records as queued or running (another process may be writing
    them), are left alone."""
    busy = busy | {r.id for r in store.list_runs(status=(QUEUED, RUNNING), limit=None, include_report=False)}
    kept = {r.id: r for r in store.list_runs(status=SUCCEEDED, limit=None, include_report=False) if r.artifact_path}
    total, count = 0, 0
    for run in sorted(kept.values(), key=lambda r: r.finished_at or 0, reverse=True):
        folder = Path(run.artifact_path)
        size = folder_bytes(folder) if folder.exists() else 0
        if size and count < policy.keep_last and total + size <= policy.max_total_bytes:
            total, count = total + size, count + 1
            continue
        shutil.rmtree(folder, ignore_errors=True)
        store.update_run(run.id, artifact_path=None)
        kept.pop(run.id)
    kept_names = {Path(r.artifact_path).name for r in kept.values()}
    for folder in root.iterdir():
        if folder.name not in kept_names and folder.name not in busy:
            shutil.rmtree(folder, ignore_errors=True)
