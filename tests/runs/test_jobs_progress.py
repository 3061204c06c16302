"""Progress values that are not plain Python (numpy, 0-d tensors), and a store write that fails in
`_finish`: the run's status must agree between the manager and the store, and the queue go on.

The job targets live here (the worker imports them as "tests.runs.test_jobs_progress:NAME").
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from compressor.progress import Progress
from compressor.runs.context import progress_dict
from compressor.runs.manager import JobManager

T = "tests.runs.test_jobs_progress:"
WAIT_S = 120  # a busy shared CPU can slow a worker's start-up


def numpy_progress(payload: dict, ctx) -> dict:
    """Reports progress with numpy scalars, as code that computes fractions with numpy does."""
    ctx.progress({"stage": "work", "fraction": np.float32(0.5), "layer": np.int64(2), "n_layers": np.int64(4),
                  "eta_s": np.float64(1.5), "message": "half way"})
    ctx.progress(Progress(stage="work", fraction=np.float32(1.0)))
    return {"ok": 1}


def plain(payload: dict, ctx) -> dict:
    return {"ok": 2}


def test_progress_dict_gives_plain_python_values():
    d = progress_dict({"stage": "s", "fraction": np.float32(0.25), "layer": np.int64(3), "n_layers": np.int32(8),
                       "eta_s": np.float64(2.0)})
    assert type(d["fraction"]) is float and type(d["layer"]) is int and type(d["n_layers"]) is int
    assert type(d["eta_s"]) is float
    assert d["fraction"] == 0.25 and d["layer"] == 3
    json.dumps(d)  # what the store writes
    assert type(progress_dict(Progress(stage="s", fraction=np.float64(1.0)))["fraction"]) is float


def test_progress_dict_refuses_values_of_the_wrong_kind():
    with pytest.raises(ValueError, match="fraction"):
        progress_dict({"stage": "s", "fraction": "half"})
    with pytest.raises(ValueError, match="layer"):
        progress_dict({"stage": "s", "fraction": 0.5, "layer": [1, 2]})


def test_numpy_progress_run_is_stored_as_succeeded_with_its_report(tmp_path):
    with JobManager(tmp_path, target=T + "numpy_progress") as m:
        run_id = m.submit({}, owner="me")
        run = m.wait(run_id, timeout=WAIT_S)
        assert run.status == "succeeded", run.error
        assert run.report == {"ok": 1}
        assert run.progress["fraction"] == 1.0
        assert m.store.get_run(run_id).status == m.status(run_id) == "succeeded"
        # and the queue goes on
        assert m.wait(m.submit({}, owner="me"), timeout=WAIT_S).status == "succeeded"


def test_failed_store_write_in_finish_keeps_store_and_memory_consistent(tmp_path, monkeypatch):
    with JobManager(tmp_path, target=T + "plain") as m:
        _finish_with_a_failing_store(m, monkeypatch)


def _finish_with_a_failing_store(m: JobManager, monkeypatch) -> None:
    real = m.store.update_run

    def refuses_reports(run_id, **fields):
        if fields.get("report") is not None:
            raise sqlite3.OperationalError("database or disk is full")
        return real(run_id, **fields)

    monkeypatch.setattr(m.store, "update_run", refuses_reports)
    run_id = m.submit({}, owner="me")
    run = m.wait(run_id, timeout=WAIT_S)
    assert run.status == "failed"
    assert "could not be stored" in run.error and "disk is full" in run.error
    assert m.status(run_id) == m.store.get_run(run_id).status == "failed"
    assert [e["status"] for e in m.events(run_id) if e["kind"] == "status"][-1] == "failed"
    monkeypatch.setattr(m.store, "update_run", real)
    assert m.wait(m.submit({}, owner="me"), timeout=WAIT_S).status == "succeeded"
