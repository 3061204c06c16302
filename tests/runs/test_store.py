"""Run store: SQLite (WAL) history and baseline cache."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.paths import default_data_dir
from compressor.runs import store as store_mod
from compressor.runs.store import LOG_MAX_CHARS, RunStore, StoreError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PAYLOAD = {
    "model": "demo",
    "recipe": [{"method": "gptq", "bits": 4, "group_size": 128}],
    "hardware": "t4",
    "eval": {"samples": 8, "context": 128},
}


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path)
    yield s
    s.close()


def test_run_round_trip(store):
    run_id = store.create_run("alice", PAYLOAD)
    run = store.get_run(run_id)
    assert run.status == "queued" and run.owner == "alice"
    assert run.model_spec == "demo" and run.hardware == "t4"
    assert run.recipe == PAYLOAD["recipe"] and run.eval_settings == PAYLOAD["eval"]
    assert run.payload == PAYLOAD and run.report is None
    store.update_run(run_id, status="succeeded", report={"ppl": 12.5, "layers": [1, 2]}, progress={"fraction": 1.0})
    run = store.get_run(run_id)
    assert run.status == "succeeded" and run.report == {"ppl": 12.5, "layers": [1, 2]}
    assert run.progress == {"fraction": 1.0}
    assert store.get_run("nope") is None


def test_list_filters_and_orders_newest_first(store):
    a = store.create_run("alice", PAYLOAD)
    b = store.create_run("bob", PAYLOAD)
    c = store.create_run("alice", PAYLOAD)
    store.update_run(c, status="failed", error="boom", report={"partial": "result"}, log="line")
    assert [r.id for r in store.list_runs()] == [c, b, a]
    assert [r.id for r in store.list_runs(owner="alice")] == [c, a]
    assert [r.id for r in store.list_runs(status="failed")] == [c]
    assert [r.id for r in store.list_runs(status=("queued", "failed"), limit=2)] == [c, b]
    listed = store.list_runs(include_report=False)[0]  # c: its report and log are not read
    assert listed.id == c and listed.partial and listed.report is None and listed.log == ""
    assert store.get_run(c).report == {"partial": "result"} and not store.get_run(c).partial
    assert store.delete_run(b) and not store.delete_run(b)
    assert [r.id for r in store.list_runs()] == [c, a]


def test_log_keeps_its_tail(store):
    run_id = store.create_run("a", {})
    store.update_run(run_id, log="x" * (LOG_MAX_CHARS + 10) + "END")
    log = store.get_run(run_id).log
    assert log.endswith("END") and len(log) < LOG_MAX_CHARS + 100 and log.startswith("...(earlier")


def test_mark_unfinished(store):
    q, r, done = (store.create_run("a", {}) for _ in range(3))
    store.update_run(r, status="running")
    store.update_run(done, status="succeeded")
    assert store.mark_unfinished(error="restarted") == [q, r]
    assert [store.get_run(x).status for x in (q, r, done)] == ["interrupted", "interrupted", "succeeded"]
    assert store.get_run(q).error == "restarted" and store.get_run(q).finished_at is not None


def test_baseline_cache(store, tmp_path):
    assert store.cache_get("demo|ctx=128") is None
    store.cache_put("demo|ctx=128", {"perplexity": 40.1, "tokens_per_s": [1.0, 2.0]})
    store.cache_put("demo|ctx=128", {"perplexity": 40.2})  # a re-measurement replaces the entry
    other = RunStore(tmp_path)  # another process's view of the same file
    assert other.cache_get("demo|ctx=128") == {"perplexity": 40.2}
    other.close()
    with pytest.raises(TypeError, match="dicts"):
        store.cache_put("k", [1, 2])
    assert store.cache_clear() == 1


def test_wal_threads_and_integrity(store):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"

    def write(i):
        for j in range(20):
            run_id = store.create_run(f"user{i}", {"j": j})
            store.update_run(run_id, status="succeeded", report={"i": i, "j": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_runs(limit=None)) == 80
    assert store.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path):
    RunStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / store_mod.DB_NAME)
    db.execute(f"PRAGMA user_version={store_mod.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this code"):
        RunStore(tmp_path)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "lab"))
    assert default_data_dir() == tmp_path / "lab"
    monkeypatch.delenv("LAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expected = Path("/data") if os.access("/data", os.W_OK | os.X_OK) and \
        Path("/data").is_dir() else tmp_path / "cache" / "compression-lab"
    assert default_data_dir() == expected


def test_unwritable_data_dir_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="LAB_DATA_DIR"):
        RunStore(blocker / "sub")


def test_a_stored_report_loads_as_the_typed_report(store):
    # A report stored by the code before the contract (schema 1) opens upgraded; a current one as is.
    old = json.loads((FIXTURES / "report_v1_this_machine.json").read_text())
    from compressor.runs.contract import Report

    current = Report.from_dict(old).to_dict()
    ids = []
    for report in (old, current):
        ids.append(store.create_run("alice", PAYLOAD))
        store.update_run(ids[-1], status="succeeded", report=report)
    loaded = [store.get_run(i).load_report() for i in ids]
    assert all(isinstance(r, Report) for r in loaded)
    assert loaded[0].to_dict() == loaded[1].to_dict() == current
    assert loaded[0].compressed.perplexity == old["compressed"]["perplexity"]


def test_a_run_without_a_readable_report_loads_none_or_says_why(store):
    queued = store.create_run("alice", PAYLOAD)
    assert store.get_run(queued).load_report() is None
    damaged = store.create_run("alice", PAYLOAD)
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET status = 'succeeded', report = '{\"comp' WHERE id = ?", (damaged,))
    run = store.get_run(damaged)
    assert run.load_report() is None and "report" in run.error
    newer = store.create_run("alice", PAYLOAD)
    store.update_run(newer, status="succeeded", report={"schema_version": 99})
    with pytest.raises(LabError, match=f"run {newer}.*update the lab"):
        store.get_run(newer).load_report()
    with pytest.raises(ValueError, match="get_run"):
        store.list_runs(include_report=False)[0].load_report()


def test_records_are_typed_and_read_only(store):
    run = store.get_run(store.create_run("alice", PAYLOAD))
    assert isinstance(run, store_mod.RunRecord) and not run.finished and run.seq >= 1
    with pytest.raises(AttributeError):
        run.status = "succeeded"
    store.update_run(run.id, status="cancelled")
    assert store.get_run(run.id).finished
