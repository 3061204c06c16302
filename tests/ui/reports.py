"""Reports for the page's tests: the stored schema-1 fixtures, and small reports written the way older
code stored them (flat sections), opened as the page opens every stored report (ui.records.report_of)."""

from __future__ import annotations

import json
from pathlib import Path

from compressor.runs.contract import Report
from compressor.runs.store import RunRecord
from ui.records import report_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = sorted(FIXTURES.glob("report_v1_*.json"))  # written by the code before the contract (schema 1)


def stored(path: Path) -> dict:
    return json.loads(path.read_text())


def run_of(report: dict | None = None, **fields) -> RunRecord:
    """A stored run as the history lists it (not finished unless `finished_at` says so)."""
    return RunRecord(**{"id": "r1", "owner": "alice", "status": "succeeded", "seq": 1, "payload": {},
                        "created_at": 1.0, "report": report, **fields})


def opened(d: dict) -> Report:
    """A stored report as the page opens it: `d`, in the schema-1 shape, with the model and recipe every
    stored report named."""
    return report_of(run_of({"model": "demo", "recipe": "int8", **d}))
