"""Visitors in the job manager: owners, per-visitor limits, the shared gallery, runs let go when a
visitor leaves, retention, a damaged store and the environment's settings. Real worker processes.
(Bad values of each are in test_bad_inputs.py.)"""

from __future__ import annotations

import sqlite3
import time

import pytest

from compressor.errors import LabError
from compressor.runs.config import ServerConfig
from compressor.runs.manager import JobManager
from compressor.runs.retention import Retention
from compressor.runs.store import RunStore, StoreDamaged

T = "tests.jobtargets:"
WAIT_S = 120


def test_four_visitors_each_queue_up_to_their_limit_and_the_queue_is_bounded(manager):
    m = manager("sleep_then_return", max_queued_per_owner=3, max_queued=13)
    ids = {v: [m.submit({"seconds": 30}, owner=v) for _ in range(3)] for v in ("v1", "v2", "v3", "v4")}
    with pytest.raises(LabError, match=r"3 runs queued or running \(the limit is 3 per visitor\)"):
        m.submit({"seconds": 30}, owner="v1")
    m.submit({"seconds": 30}, owner="v5")  # the 13th
    with pytest.raises(LabError, match=r"queue is full \(13 runs"):
        m.submit({"seconds": 30}, owner="v6")
    assert [r.id for r in m.list_runs(owner="v2")] == ids["v2"][::-1]
    assert m.cancel_owner("v1") == ids["v1"] and m.status(ids["v1"][0]) == "cancelled"
    m.submit({"seconds": 30}, owner="v1")  # room again


def test_a_visitor_cancels_their_own_run_and_not_anothers(manager):
    m = manager("sleep_then_return")
    mine, theirs = m.submit({"seconds": 30}, owner="alice"), m.submit({"seconds": 30}, owner="bob")
    with pytest.raises(LabError, match="belongs to another session"):
        m.cancel(theirs, owner="alice")
    with pytest.raises(LabError, match="no run .* of yours"):
        m.cancel("not-a-run", owner="alice")
    assert m.cancel(mine, owner="alice") and m.cancel(theirs, owner="bob")
    assert m.wait(mine, timeout=WAIT_S).status == m.wait(theirs, timeout=WAIT_S).status == "cancelled"
    assert m.cancel(mine, owner="alice") is False  # already over: no error, nothing to do


def test_shared_gallery_and_a_visitors_view(manager):
    m = manager("dispatch")
    a = m.wait(m.submit({"fn": "echo", "x": 1}, owner="alice"), timeout=WAIT_S).id
    b = m.wait(m.submit({"fn": "echo", "x": 2}, owner="bob"), timeout=WAIT_S).id
    assert m.get_run(b, viewer="alice") is None and m.get_run(b, viewer="bob").id == b
    with pytest.raises(LabError, match="only share your own"):
        m.set_shared(b, owner="alice")
    m.set_shared(b, owner="bob")
    assert m.get_run(b, viewer="alice").shared
    assert [r.id for r in m.list_runs(visible_to="alice")] == [b, a]
    assert [r.id for r in m.list_runs(shared=True)] == [b]
    assert [r.id for r in m.list_runs(visible_to="carol", include_report=False)] == [b]
    m.set_shared(b, owner="bob", shared=False)
    assert [r.id for r in m.list_runs(visible_to="alice")] == [a]
    going = m.submit({"fn": "sleep_then_return", "seconds": 30}, owner="alice")
    with pytest.raises(LabError, match=r"is (queued|running): only a finished run with results"):
        m.set_shared(going, owner="alice")
    m.cancel(going, owner="alice")


def test_the_runs_of_a_visitor_who_left_are_cancelled_after_the_grace_period(manager):
    m = manager("sleep_then_return", owner_grace_s=1.0)
    m.touch("gone")
    m.touch("back")
    m.touch("here")
    gone = [m.submit({"seconds": 30}, owner="gone") for _ in range(2)]
    back = m.submit({"seconds": 30}, owner="back")
    here = m.submit({"seconds": 30}, owner="here")
    script = m.submit({"seconds": 30}, owner="script")  # never touched: never let go
    m.left("gone")
    m.left("back")
    time.sleep(0.3)
    m.touch("back")  # a reload within the grace period
    runs = [m.wait(r, timeout=WAIT_S) for r in gone]
    assert {r.status for r in runs} == {"cancelled"}
    assert all("visitor left the page more than 1 s ago" in r.error for r in runs)
    time.sleep(1.5)
    assert {m.status(r) for r in (back, here, script)} <= {"queued", "running"}


def test_a_silent_visitor_is_let_go_after_the_idle_time(manager):
    m = manager("sleep_then_return", owner_idle_s=1.0)
    m.touch("quiet")
    run = m.submit({"seconds": 30}, owner="quiet")
    assert "nothing was heard" in m.wait(run, timeout=WAIT_S).error


def test_retention_deletes_old_runs_with_their_artifacts_and_old_cache_entries(tmp_path):
    store = RunStore(tmp_path)
    ids = [store.create_run("a", {"i": i}) for i in range(5)]
    for i in ids[:4]:
        store.update_run(i, status="succeeded", finished_at=time.time())
        (tmp_path / "artifacts" / i).mkdir(parents=True)
    store.update_run(ids[0], finished_at=time.time() - 10 * 86400)
    for k in range(4):
        store.cache_put(f"k{k}", {"k": k})
    gone = Retention(keep_runs=2, run_days=5, cache_entries=1, cache_days=None).apply(store, tmp_path / "artifacts")
    assert gone == {"runs": 2, "cache_entries": 3}
    assert [r.id for r in store.list_runs()] == ids[::-1][:3]  # the queued run stays, whatever its age
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(ids[2:4])
    assert store.cache_get("k3") == {"k": 3} and store.cache_get("k0") is None


def test_the_manager_applies_retention_at_start_up(tmp_path):
    store = RunStore(tmp_path)
    for i in range(4):
        store.update_run(store.create_run("a", {"i": i}), status="failed")
    store.close()
    with JobManager(tmp_path, target=T + "echo", retention=Retention(keep_runs=1)) as m:
        assert len(m.list_runs()) == 1


def test_a_damaged_page_is_found_at_start_up(tmp_path):
    store = RunStore(tmp_path)
    for i in range(300):
        store.create_run("a", {"pad": "x" * 2000, "i": i})
    store.close()
    path = tmp_path / "runs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[8192:8192 + 4096] = b"\x07" * 4096  # a page in the middle of the runs table
    path.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged, match="damaged"):
        JobManager(tmp_path, target=T + "echo")
    assert path.read_bytes() == bytes(data)


def test_a_schema_1_file_gains_the_shared_column(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.sqlite3")
    db.executescript("CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT "
                     "NOT NULL, model_spec TEXT, recipe TEXT, hardware TEXT, eval_settings TEXT, payload TEXT NOT NULL,"
                     " status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL, progress "
                     "TEXT, report TEXT, error TEXT, log TEXT NOT NULL DEFAULT '', artifact_path TEXT);"
                     "INSERT INTO runs (id, owner, payload, status, created_at) VALUES ('old', 'a', '{}', 'failed', 1);"
                     "PRAGMA user_version=1;")
    db.close()
    store = RunStore(tmp_path)
    assert store.get_run("old").shared is False and store.set_shared("old", True) and store.get_run("old").shared


def test_environment_values_reach_the_managers_options():
    config = ServerConfig.from_env({"LAB_TIME_LIMIT_S": " 60 ", "LAB_KEEP_RUNS": "off", "LAB_VISITOR_IDLE_S": "120"})
    options = config.run_manager_options()
    assert options["time_limit_s"] == 60.0 and options["retention"].keep_runs is None
    assert options["owner_idle_s"] == 120.0 and options["max_queued_per_owner"] == 3
    assert ("LAB_KEEP_RUNS", "off", "finished runs kept") in config.describe()
