"""The page's way in for stored runs (`compressor.runs.store.RunRecord`) and their reports.

A stored report becomes a `Report` here and nowhere else: `RunRecord.load_report()` (the contract's
`Report.from_dict`, which upgrades reports stored by older versions), once per finished run.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from compressor.errors import LabError
from compressor.runs.contract import Report
from compressor.runs.store import RunRecord

# Reports of finished runs never change: each is opened once (a few ms each, and the history shows 200).
_OPENED: OrderedDict[tuple[str, float, float], Report | LabError] = OrderedDict()
OPENED_KEPT = 512


def report_of(run: RunRecord) -> Report | None:
    """The run's Report; None when it has none (not finished, failed); LabError, naming the run, when
    the stored report cannot be read."""
    if run.report is None:
        return None
    if not run.finished or run.finished_at is None:  # nothing identifies it for the cache
        return run.load_report()
    key = (run.id, run.created_at, run.finished_at)
    if key not in _OPENED:
        try:
            _OPENED[key] = run.load_report()
        except LabError as e:
            _OPENED[key] = e
        if len(_OPENED) > OPENED_KEPT:
            _OPENED.popitem(last=False)
    found = _OPENED[key]
    if isinstance(found, LabError):
        raise found
    return found


def has_saved_model(run: RunRecord) -> bool:
    """True when the run's artifact folder holds a loadable model (not just its report)."""
    return bool(run.artifact_path) and (Path(run.artifact_path) / "config.json").is_file()


def visible_run(manager, rid: object, owner: str) -> RunRecord:
    """The run `rid` if this visitor may see it (theirs, or shared by its owner: the manager's
    `get_run(viewer=)`); LabError otherwise, worded the same for a run that does not exist, so ids of
    private runs cannot be probed."""
    run = None
    if isinstance(rid, str) and rid.strip() and len(rid) <= 64:
        run = manager.get_run(rid.strip(), viewer=owner)
    if run is None:
        raise LabError(f"no run {str(rid)[:40]!r} is yours or shared: pick one of your runs in History, or one "
                       "from the shared gallery")
    return run
