"""Run store under damage and contention: corrupted JSON cells, an older (unversioned) file, two writers."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from compressor.runs.store import DB_NAME, RunStore


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path)
    yield s
    s.close()


def _corrupt(store: RunStore, run_id: str, column: str, text: str) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute(f"UPDATE runs SET {column} = ? WHERE id = ?", (text, run_id))


@pytest.mark.parametrize("column", ["report", "progress", "recipe"])
def test_a_corrupted_json_cell_does_not_hide_the_history(store, column):
    good = store.create_run("alice", {"model": "demo", "recipe": "w4-g128"})
    bad = store.create_run("alice", {"model": "demo", "recipe": "w4-g128"})
    store.update_run(good, status="succeeded", report={"compressed": {"perplexity": 9.0}})
    _corrupt(store, bad, column, '{"compressed": {"perplex')  # a torn write, a hand edit
    runs = {r["id"]: r for r in store.list_runs()}
    assert runs[good]["report"] == {"compressed": {"perplexity": 9.0}}
    assert runs[bad][column] is None
    assert column in (runs[bad]["error"] or "")  # the damage is named, not silent
    assert store.get_run(bad)[column] is None


def test_a_corrupted_baseline_cache_entry_is_a_miss(store):
    store.cache_put("k", {"perplexity": 1.0})
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE baseline_cache SET value = 'not json' WHERE key = 'k'")
    assert store.cache_get("k") is None
    store.cache_put("k", {"perplexity": 2.0})  # measured again, stored again
    assert store.cache_get("k") == {"perplexity": 2.0}


def test_an_unversioned_older_file_opens_with_its_rows(tmp_path):
    s = RunStore(tmp_path)
    run_id = s.create_run("alice", {"model": "demo"})
    s.close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA user_version=0")
    s = RunStore(tmp_path)
    try:
        assert s.get_run(run_id)["model_spec"] == "demo"
    finally:
        s.close()


def _write_many(data_dir: str, owner: str, n: int) -> None:
    s = RunStore(data_dir)
    for i in range(n):
        run_id = s.create_run(owner, {"model": "demo", "i": i})
        s.update_run(run_id, status="succeeded", report={"i": i}, log="x" * 100)
        s.cache_put(f"{owner}-{i}", {"i": i})
    s.close()


def test_two_processes_write_the_same_file_without_losing_rows(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), f"p{k}", 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    s = RunStore(tmp_path)
    try:
        runs = s.list_runs(limit=None)
        assert len(runs) == 120 and all(r["status"] == "succeeded" for r in runs)
        assert s.integrity_check() == "ok"
    finally:
        s.close()
