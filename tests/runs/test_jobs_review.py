"""Worker and job manager under a misbehaving target: out of memory, printing, and artifacts of runs
recorded outside the queue. `_run_one` is called in this process with a recording `send`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_the_worker_imports_neither_the_manager_nor_torch():
    code = ("import sys, compressor.runs.worker; "
            "print(sorted(m for m in ('compressor.runs.manager', 'compressor.runs.scheduler', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
