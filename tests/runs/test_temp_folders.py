"""No temporary folders left behind: a context's `lab-run-*` folder, and a run's artifact folder when its
worker is cancelled or killed mid-write (the parent removes it: a killed worker runs no clean-up of its own).

Each test points the temp folder at a private one, so other tests (and other sessions) on the machine
cannot change what is counted.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.runs.context import TEMP_PREFIX, JobContext
from compressor.runs.manager import JobManager
from compressor.runs.runner import run_job
from tests.runs.test_jobs import wait_for_log

WAIT_S = 120
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmp(tmp_path, monkeypatch) -> Path:
    """The system temp folder for this test: tempfile.mkdtemp makes folders here."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    return folder


def _temporary(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{TEMP_PREFIX}*"))


def test_a_refused_run_makes_no_temporary_folder(tmp):
    """What every refused CLI-style run did: one empty lab-run-* folder each, never removed."""
    with pytest.raises(LabError, match="must be true or false"):
        run_job({"model": "demo", "recipe": "int8", "allow_pickle": "no"}, JobContext.local(on_log=None))
    assert _temporary(tmp) == []


def test_a_used_temporary_folder_goes_on_close_or_with_the_context(tmp):
    ctx = JobContext.local(on_log=None)
    (ctx.artifact_dir / "model.safetensors").write_bytes(b"x" * 1024)
    assert len(_temporary(tmp)) == 1
    ctx.close()
    ctx.close()  # twice is fine
    assert _temporary(tmp) == []
    forgotten = JobContext.local(on_log=None)
    (forgotten.artifact_dir / "half.bin").write_bytes(b"x")
    del forgotten  # nobody closed it
    gc.collect()
    assert _temporary(tmp) == []
    given = tmp / "mine"
    with JobContext.local(artifact_dir=given, on_log=None) as ctx:
        assert ctx.artifact_dir == given
    assert given.is_dir()  # a folder the caller gave is the caller's


def test_a_process_that_exits_without_closing_leaves_no_temporary_folder(tmp):
    code = ("from compressor.runs.context import JobContext\n"
            "ctx = JobContext.local(on_log=None)\n"
            "(ctx.artifact_dir / 'model.bin').write_bytes(b'x')\n"
            "print(ctx.artifact_dir)\n"
            "raise SystemExit(0)  # as a SIGTERM handler exits\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TMPDIR": str(tmp)})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent == tmp
    assert _temporary(tmp) == []


def save_then_hang(payload: dict, ctx) -> dict:
    """A job target: half a compressed model in its artifact folder, then a long wait."""
    (ctx.artifact_dir / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    ctx.log(f"pid={os.getpid()}")
    time.sleep(60)
    return {}


@pytest.mark.parametrize("end", ["cancel", "sigkill"])
def test_the_parent_removes_the_artifact_folder_of_a_cancelled_or_killed_run(tmp, tmp_path, end):
    with JobManager(tmp_path / "jobs", target="tests.runs.test_temp_folders:save_then_hang") as m:
        run_id = m.submit({}, owner="v-a")
        pid = int(wait_for_log(m, run_id, "pid=").split("=")[1])
        folder = m.artifact_root / run_id
        assert (folder / "model.safetensors").is_file()
        if end == "cancel":
            assert m.cancel(run_id, owner="v-a") is True
        else:
            os.kill(pid, signal.SIGKILL)
        run = m.wait(run_id, timeout=WAIT_S)
        assert run.status == ("cancelled" if end == "cancel" else "failed")
        assert not folder.exists() and run.artifact_path is None
        assert list(m.artifact_root.iterdir()) == []
    assert _temporary(tmp) == []
