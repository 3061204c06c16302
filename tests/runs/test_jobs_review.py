"""Worker and job manager under a misbehaving target: out of memory, printing, and runs recorded
outside the queue (`run_inline`, the app's ZeroGPU path). `_run_one` is called in this process with a
recording `send`; the targets of `run_inline` are plain functions of this module."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.context import BaselineCache
from compressor.runs.manager import JobManager
from compressor.runs.store import RUNNING, RunStore
from compressor.runs.worker import _run_one

REPO = Path(__file__).resolve().parents[2]


def oom(payload: dict, ctx) -> dict:
    raise MemoryError()


def chatty(payload: dict, ctx) -> dict:
    print("hello from the target")
    print("progress 10%\rprogress 100%", file=sys.stderr)
    sys.stdout.write("no newline at the end")
    return {"ok": True}


def _run(tmp_path, target: str) -> list[tuple]:
    sent = []
    cache = BaselineCache(lambda: RunStore(tmp_path))
    _run_one(lambda *msg: sent.append(msg), cache, "r1", f"tests.runs.test_jobs_review:{target}", {}, tmp_path / "art")
    return sent


def test_a_memory_error_is_explained_not_shown_as_a_bare_class_name(tmp_path):
    (kind, _, message, _), = [m for m in _run(tmp_path, "oom") if m[0] == "error"]
    assert message != "MemoryError: " and "out of memory" in message and "smaller model" in message


def test_what_a_target_prints_reaches_the_run_log(tmp_path):
    sent = _run(tmp_path, "chatty")
    lines = [m[3] for m in sent if m[0] == "log"]
    assert "hello from the target" in lines
    assert "progress 100%" in lines and "progress 10%\rprogress 100%" not in lines
    assert "no newline at the end" in lines
    assert sent[-1][0] == "done"
    assert sys.stdout is sys.__stdout__ or "pytest" in type(sys.stdout).__module__  # restored


def test_pruning_keeps_the_folder_of_a_run_recorded_running_outside_the_queue(tmp_path):
    with JobManager(tmp_path, target="tests.jobtargets:echo", artifacts=ArtifactPolicy(keep_last=1)) as m:
        run_id = m.store.create_run("alice", {"model": "demo"})  # as app.run_inline_on_gpu records one
        m.store.update_run(run_id, status=RUNNING)
        folder: Path = m.artifact_root / run_id
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        m.prune_artifacts()
        assert folder.exists()


# -- run_inline: a target run in the calling process, recorded as a queued run is ------------------


def saves_and_reports(payload: dict, ctx) -> dict:
    ctx.progress({"stage": "work", "fraction": 0.5, "layer": 1, "n_layers": 2, "message": "half way"})
    ctx.log("saving")
    (ctx.artifact_dir / "model.safetensors").write_bytes(b"x" * payload.get("kb", 1) * 1024)
    return {"pid": os.getpid(), "run_id": ctx.run_id, "cached": ctx.cache.get("k")}


def fails(payload: dict, ctx) -> dict:
    (ctx.artifact_dir / "half.bin").write_bytes(b"x")
    if payload.get("lab"):
        raise LabError("bits=5 is not valid: use 2, 3, 4 or 8")
    return {"ratio": 1 / 0}


@pytest.fixture
def inline_manager(tmp_path):
    with JobManager(tmp_path, target="tests.jobtargets:steps", artifacts=ArtifactPolicy(keep_last=2)) as m:
        yield m


def test_run_inline_records_the_run_like_a_queued_one(inline_manager):
    m = inline_manager
    m.store.cache_put("k", {"v": 1})
    runs = [m.run_inline({"model": "demo", "kb": 1}, "alice", saves_and_reports) for _ in range(3)]
    run = runs[-1]
    assert run.status == "succeeded" and run.owner == "alice" and run.model_spec == "demo"
    assert run.report == {"pid": os.getpid(), "run_id": run.id, "cached": {"v": 1}}  # here, with the cache
    assert run.progress["fraction"] == 0.5 and "half way" in run.log and "saving" in run.log
    assert run.started_at >= run.created_at and run.finished_at >= run.started_at
    assert m.store.get_run(run.id) == dataclasses.replace(run, position=None)
    kinds = [(e["kind"], e.get("status") or e.get("layer") or e.get("message")) for e in m.events(run.id)]
    assert kinds == [("status", "queued"), ("status", "running"), ("progress", 1), ("log", "half way"),
                     ("log", "saving"), ("status", "succeeded")]
    # the artifact policy applies: the newest two keep their folders
    assert [m.get_run(r.id).artifact_path is not None for r in runs] == [False, True, True]
    assert sorted(p.name for p in m.artifact_root.iterdir()) == sorted(r.id for r in runs[1:])


def test_run_inline_failures_read_as_a_workers_do(inline_manager, caplog):
    m = inline_manager
    lab = m.run_inline({"lab": True}, "alice", fails)
    other = m.run_inline({}, "alice", fails)
    assert lab.status == other.status == "failed"
    assert lab.error == "bits=5 is not valid: use 2, 3, 4 or 8"
    assert other.error == "ZeroDivisionError: division by zero"
    assert "Traceback" not in other.log
    assert any("Traceback" in r.getMessage() and "test_jobs_review.py" in r.getMessage() for r in caplog.records)
    assert list(m.artifact_root.iterdir()) == []  # only succeeded runs keep files
    bad = m.run_inline({}, "alice", lambda payload, ctx: [1, 2])
    assert bad.status == "failed" and "must be a dict, got list" in bad.error
    oom = m.run_inline({}, "alice", lambda payload, ctx: (_ for _ in ()).throw(MemoryError()))
    assert "out of memory" in oom.error and "smaller model" in oom.error
    # and the queue is untouched
    assert m.wait(m.submit({"n": 1}, owner="a"), timeout=120).status == "succeeded"


def test_run_inline_is_owner_checked_and_cannot_be_cancelled(tmp_path):
    seen = {}

    def looks_around(payload: dict, ctx) -> dict:
        seen["status"], seen["position"] = m.status(ctx.run_id), m.position(ctx.run_id)
        seen["live"] = m.get_run(ctx.run_id).status
        with pytest.raises(LabError, match="another session"):
            m.cancel(ctx.run_id, owner="bob")
        with pytest.raises(LabError, match="cannot be cancelled"):
            m.cancel(ctx.run_id, owner="alice")
        with pytest.raises(LabError, match="1 runs queued or running"):
            m.run_inline({}, "alice", looks_around)
        return {}

    with JobManager(tmp_path, target="tests.jobtargets:steps", max_queued_per_owner=1) as m:
        assert m.run_inline({}, "alice", looks_around).status == "succeeded"
        assert seen == {"status": "running", "position": 0, "live": "running"}
        with pytest.raises(LabError, match="owner"):
            m.run_inline({}, "", looks_around)
        with pytest.raises(LabError, match="not JSON"):
            m.run_inline({"x": object()}, "alice", looks_around)


def test_run_inline_interrupted_by_the_app_still_ends_the_run(inline_manager):
    m = inline_manager

    def interrupted(payload, ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.run_inline({}, "alice", interrupted)
    (run,) = m.list_runs()
    assert run.status == "interrupted" and run.error == "the app stopped while this run ran (KeyboardInterrupt)"


def test_the_worker_imports_neither_the_manager_nor_torch():
    code = ("import sys, compressor.runs.worker; "
            "print(sorted(m for m in ('compressor.runs.manager', 'compressor.runs.scheduler', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
