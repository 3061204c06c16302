"""The Ray executor against a Ray started here (`ray.init(num_cpus=2)`): real cells on a tiny model land
their reports in the run store, a worker process killed mid-cell fails that cell only (or is retried), and
a cancelled sweep stops its cells. Ray's session and the cells' folders live in a temporary folder that
goes with the Ray (nothing left in /tmp or ~/.ray). Skipped without Ray installed (`pip install ray`); what the lab
does without Ray: tests/runs/test_sweep.py and test_sweep_cli.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from compressor.runs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED
from compressor.runs.sweep import SweepSpec
from compressor.runs.sweep_exec import RunPlace
from tests.runs.sweep_targets import HANG_RECIPE

ray = pytest.importorskip("ray")

TARGETS = "tests.runs.sweep_targets:"
# as little evaluation as a run takes: the test is about the executor, not the figures
MINIMAL_EVAL = {"ppl_tokens": 128, "context": 64, "top_k": 4, "arithmetic_samples": 0, "max_new_tokens": 1,
                "speed_prompt_tokens": 8, "speed_new_tokens": 2, "speed_batch": 1, "repeats": 1,
                "online_extras": False, "attribute_stages": False}
RECIPES = f"""
- int8
- w4-g128
- {HANG_RECIPE}
- {{name: rtn-w4-g64, method: rtn, bits: 4, group_size: 64}}
- {{name: rtn-w8-g32, method: rtn, bits: 8, group_size: 32}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A tiny model in a data folder, and a Ray of 2 CPUs whose workers see that folder (LAB_DATA_DIR is
    set before `ray.init`: workers inherit the environment, and local models must live in the data folder)."""
    from tests.helpers import tiny_model_folder

    root = tmp_path_factory.mktemp("ray-sweep")
    # short: Ray's socket paths under it must stay within 107 characters
    tmp = Path(tempfile.mkdtemp(prefix="lab-ray-test-", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        folder = tiny_model_folder(root, mp)
        for name in ("RAY_TMPDIR", "TMPDIR"):  # Ray's session folder, and the workers' tempfile folder
            mp.setenv(name, str(tmp))
        mp.setenv("RAY_AUTH_MODE", "disabled")  # a cluster of this process only; no token written to ~/.ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
        try:
            yield SimpleNamespace(data=folder.parent, tiny=folder, tmp=tmp)
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


def _sweeps(cluster, **options):
    from compressor.runs.sweep_ray import RayExecutor
    from compressor.runs.sweep_run import Sweeps

    place = RunPlace.open(cluster.data)
    executor = RayExecutor(place, "local", cpus_per_cell=1, **options)
    return Sweeps(place, executor=executor, check_models=False), executor


def _when(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def _cell(sweeps, sweep_id, label):
    return next(c for c in sweeps.cells(sweep_id) if c.recipe_label == label)


def _kill_the_hanging_cell(sweeps, executor, sweep_id: str) -> int:
    """Waits until the HANG_RECIPE cell runs in a Ray worker, then kills that worker process; its pid."""
    victim = _when(lambda: (c := _cell(sweeps, sweep_id, HANG_RECIPE)).status == RUNNING
                   and executor.worker_pid(c.run_id) and c, 240, "the hanging cell's start")
    pid = executor.worker_pid(victim.run_id)
    assert pid != os.getpid() and "ray::" in Path(f"/proc/{pid}/cmdline").read_text()  # Ray's worker process
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_ray_sweep_lands_every_report_and_a_killed_worker_fails_only_its_cell(cluster):
    sweeps, executor = _sweeps(cluster, max_retries=0, target=TARGETS + "real_or_hang")
    try:
        spec = SweepSpec.build(str(cluster.tiny), RECIPES, [MINIMAL_EVAL], hardware="t4")
        sweep_id = sweeps.start(spec, "tester")
        pid = _kill_the_hanging_cell(sweeps, executor, sweep_id)
        progress = sweeps.wait(sweep_id, timeout=300)
    finally:
        sweeps.shutdown()

    assert (progress.total, progress.done, progress.failed, progress.running, progress.queued) == (5, 4, 1, 0, 0)
    cells = sweeps.cells(sweep_id)
    killed = next(c for c in cells if c.recipe_label == HANG_RECIPE)
    assert killed.status == FAILED and "worker process running this cell died" in killed.run.error
    assert f"worker pid {pid}" in killed.run.log
    reports = [c.run.load_report() for c in cells if c is not killed]
    assert [c.status for c in cells if c is not killed] == [SUCCEEDED] * 4
    for cell, report in zip([c for c in cells if c is not killed], reports, strict=True):
        assert report.request.model == str(cluster.tiny) and report.compressed.kld >= 0
        assert sweeps.store.sweep_of(cell.run_id) == (sweep_id, cell.index)  # tagged with its sweep
        assert "running on Ray node" in cell.run.log
    # the first cell measured the baseline; the cells handed over after it read it
    assert [r.timings.baseline_cached for r in reports] == [False, True, True, True]
    assert (cluster.data / "artifacts" / cells[0].run_id / "config.json").is_file()  # the model came back


def test_a_worker_killed_once_is_retried_by_ray_and_the_cell_succeeds(cluster):
    sweeps, executor = _sweeps(cluster, max_retries=1, target=TARGETS + "hang_once")
    try:
        sweep_id = sweeps.start(SweepSpec.build("demo", f"int8,{HANG_RECIPE}"), "tester")
        _kill_the_hanging_cell(sweeps, executor, sweep_id)
        progress = sweeps.wait(sweep_id, timeout=120)
    finally:
        sweeps.shutdown()
    assert progress.done == 2
    retried = _cell(sweeps, sweep_id, HANG_RECIPE)
    assert retried.run.report["retried"] and "Ray retried this cell (attempt 2)" in retried.run.log


def test_cancelling_a_ray_sweep_stops_running_and_queued_cells(cluster):
    sweeps, executor = _sweeps(cluster, max_retries=0, target=TARGETS + "hang")
    try:
        sweep_id = sweeps.start(SweepSpec.build("demo", "int8,w4-g128,w3-g128"), "tester")
        _when(lambda: _cell(sweeps, sweep_id, "int8").status == RUNNING, 120, "the first cell's start")
        t0 = time.monotonic()
        assert sweeps.cancel(sweep_id, owner="tester")
        progress = sweeps.wait(sweep_id, timeout=60)
        took = time.monotonic() - t0
    finally:
        sweeps.shutdown()
    assert progress.cancelled == 3 and progress.done == 0 and took < 30
    assert {c.status for c in sweeps.cells(sweep_id)} == {CANCELLED}
    assert sweeps.get(sweep_id).status == "cancelled"


def test_the_killed_workers_cell_folders_go_with_the_next_cell(tmp_path, monkeypatch):
    from compressor.runs.sweep_ray import CELL_FOLDER, _remove_orphan_cell_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"{CELL_FOLDER}{gone.stdout.strip()}-x1", tmp_path / f"{CELL_FOLDER}{os.getpid()}-x2"
    for folder in (dead, alive):
        (folder / "model").mkdir(parents=True)
    _remove_orphan_cell_folders()
    assert not dead.exists() and alive.exists()


@pytest.mark.parametrize("path,shipped", [
    ("compressor/runs/sweep.py", True), ("assets/eval/wikitext.txt", True), ("ui/sweep.py", True),
    ("runs/a.sqlite3", False), ("data/models/x", False), ("tests/runs/test_sweep.py", False),
    (".git/HEAD", False), ("compressor/__pycache__/x.pyc", False), ("docs/sweeps.md", False),
])
def test_a_cluster_gets_the_code_and_assets_of_this_checkout(path, shipped):
    """CODE_EXCLUDES read by Ray's own matcher for a working_dir's excludes (Ray 2.60)."""
    from ray._private.runtime_env.packaging import _get_excludes

    from compressor.paths import REPO
    from compressor.runs.sweep_ray import CODE_EXCLUDES

    assert _get_excludes(REPO, CODE_EXCLUDES)(REPO / path) is (not shipped)
