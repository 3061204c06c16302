"""Job manager: real worker processes running the real targets in tests/jobtargets.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.progress import Progress
from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.context import JobContext, progress_dict
from compressor.runs.manager import JobManager
from compressor.runs.store import RunStore
from tests.runs.procs import pid_alive

T = "tests.jobtargets:"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120  # generous: a busy shared CPU can slow a worker's start-up; passing runs return at once


def wait_for_log(m: JobManager, run_id: str, prefix: str, timeout: float = WAIT_S) -> str:
    """Blocks until the run logs a line starting with `prefix`; returns the line."""
    seen, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = m.events(run_id, since=seen, timeout=0.5)
        seen = events[-1]["index"] + 1 if events else seen
        for e in events:
            if e["kind"] == "log" and e["message"].startswith(prefix):
                return e["message"]
    raise AssertionError(f"run {run_id} logged no line starting with {prefix!r}; status {m.status(run_id)}")


def test_job_succeeds_and_report_is_stored(manager):
    m = manager("steps")
    run_id = m.submit({"model": "demo", "recipe": [{"method": "rtn", "bits": 4}], "n": 4, "tag": "a"}, owner="alice")
    run = m.wait(run_id, timeout=WAIT_S)
    assert run.status == "succeeded", run.error
    assert run.report["steps"] == 4 and run.report["tag"] == "a"
    assert run.owner == "alice" and run.model_spec == "demo"
    assert run.recipe == [{"method": "rtn", "bits": 4}]
    assert run.progress["layer"] == 4 and run.progress["fraction"] == 1.0
    assert "done 4 steps" in run.log
    assert run.started_at >= run.created_at and run.finished_at >= run.started_at
    # Progress streamed back as events, in order, dicts and Progress objects alike.
    layers = [e["layer"] for e in m.events(run_id) if e["kind"] == "progress"]
    assert layers == [1, 2, 3, 4]
    statuses = [e["status"] for e in m.events(run_id) if e["kind"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    # The stored row is what a fresh reader of the file sees.
    other = RunStore(m.data_dir)
    assert other.get_run(run_id).report == run.report
    other.close()


def test_worker_runs_in_another_process_without_torch(manager):
    m = manager("echo")
    run = m.wait(m.submit({"x": 1}, owner="a"), timeout=WAIT_S)
    assert run.status == "succeeded", run.error
    assert run.report["pid"] != os.getpid() and run.report["pid"] in m.worker_pids()
    assert run.report["torch_loaded"] is False, "worker start-up must not import torch"
    assert run.report["payload"] == {"x": 1}


def test_failures_end_failed_with_message_and_next_job_runs(manager, caplog):
    m = manager("dispatch")
    lab = m.submit({"fn": "raise_lab_error", "bits": 5}, owner="a")
    other = m.submit({"fn": "raise_other", "zero": 0}, owner="a")
    ok = m.submit({"fn": "steps", "n": 2}, owner="b")
    lab_run, other_run, ok_run = (m.wait(r, timeout=WAIT_S) for r in (lab, other, ok))
    assert lab_run.status == "failed"
    assert lab_run.error == "stage 'rtn': bits=5 is not valid: use 2, 3, 4 or 8"
    assert other_run.status == "failed"
    assert other_run.error == "ZeroDivisionError: division by zero"
    # the traceback is for the operator (the app's log), not in the run's log that visitors read
    assert "Traceback" not in other_run.log and "the app's log has the details" in other_run.log
    assert any("Traceback" in r.getMessage() and "jobtargets.py" in r.getMessage() for r in caplog.records)
    assert ok_run.status == "succeeded" and ok_run.report["steps"] == 2


def test_bad_targets_and_payloads_fail_clearly(manager, tmp_path):
    m = manager("not_a_dict")
    run = m.wait(m.submit({}, owner="a"), timeout=WAIT_S)
    assert run.status == "failed" and "must be a dict, got list" in run.error
    missing = JobManager(tmp_path / "missing", target="tests.no_such_module:run")
    try:
        run = missing.wait(missing.submit({}, owner="a"), timeout=WAIT_S)
    finally:
        missing.shutdown()
    assert run.status == "failed" and "cannot be imported" in run.error and "no_such_module" in run.error
    with pytest.raises(LabError, match="not JSON"):
        m.submit({"x": object()}, owner="a")
    with pytest.raises(LabError, match="owner"):
        m.submit({}, owner="")
    with pytest.raises(ValueError, match="package.module:function"):
        JobManager(tmp_path / "other", target="no_colon")
    with pytest.raises(ValueError, match="concurrency"):
        JobManager(tmp_path / "other", concurrency=0)


def test_workers_that_cannot_start_fail_the_run(tmp_path, monkeypatch):
    # Workers import `compressor` from the parent's sys.path: put a broken copy first.
    broken = tmp_path / "broken" / "compressor"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('broken install')\n")
    monkeypatch.syspath_prepend(str(broken.parent))
    with JobManager(tmp_path / "data", target=T + "echo") as m:
        run = m.wait(m.submit({}, owner="a"), timeout=WAIT_S)
    assert run.status == "failed" and "could not start" in run.error and "exit code 1" in run.error


def test_sigkill_mid_job_fails_that_job_and_queue_goes_on(manager):
    m = manager("dispatch")
    doomed = m.submit({"fn": "allocate_and_hang", "mb": 32, "seconds": 60}, owner="a")
    after = m.submit({"fn": "steps", "n": 2}, owner="b")
    pid = int(wait_for_log(m, doomed, "pid=").split("=")[1])
    assert m.position(doomed) == 0 and m.position(after) == 1
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    run = m.wait(doomed, timeout=10)
    assert run.status == "failed"
    assert "worker process died" in run.error and "signal 9" in run.error and "memory" in run.error
    nxt = m.wait(after, timeout=WAIT_S)
    assert nxt.status == "succeeded"
    assert pid not in m.worker_pids()
    assert m.store.integrity_check() == "ok"


def test_cancel_running_job_within_5_s(manager):
    m = manager("dispatch")
    # A pure-Python busy loop: nothing in it cooperates with the cancel.
    run_id = m.submit({"fn": "spin", "seconds": 60}, owner="a")
    pid = int(wait_for_log(m, run_id, "pid=").split("=")[1])
    t0 = time.monotonic()
    assert m.cancel(run_id) is True
    run = m.wait(run_id, timeout=5)
    elapsed = time.monotonic() - t0
    assert run.status == "cancelled" and elapsed < 5, elapsed
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the cancelled job's worker process is still alive"
    assert m.cancel(run_id) is False  # already over
    # A fresh worker takes the next job.
    assert m.wait(m.submit({"fn": "steps", "n": 1}, owner="a"), timeout=WAIT_S).status == "succeeded"


def test_cancel_queued_job_and_positions(manager):
    m = manager("sleep_then_return")
    first = m.submit({"seconds": 30}, owner="a")
    second = m.submit({"seconds": 0}, owner="b")
    third = m.submit({"seconds": 0}, owner="c")
    wait_for_log(m, first, "pid=")
    assert [m.position(r) for r in (first, second, third)] == [0, 1, 2]
    assert [q["run_id"] for q in m.queue()] == [second, third]
    with pytest.raises(LabError, match="another session"):
        m.cancel(second, owner="c")
    assert m.cancel(second, owner="b") is True
    assert m.status(second) == "cancelled" and m.position(second) is None
    assert m.position(third) == 1
    m.cancel(first)
    assert m.wait(third, timeout=WAIT_S).status == "succeeded"
    assert m.wait(first, timeout=5).status == "cancelled"


def test_four_concurrent_submissions_complete_in_submission_order(manager):
    m = manager("steps")
    barrier, ids, lock = threading.Barrier(4), [], threading.Lock()

    def submit(i):
        barrier.wait()
        run_id = m.submit({"n": 3, "step_s": 0.02, "tag": i}, owner=f"user{i}")
        with lock:
            ids.append(run_id)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = [m.wait(r, timeout=WAIT_S) for r in ids]
    assert all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    by_submission = sorted(runs, key=lambda r: r.seq)
    starts = [r.started_at for r in by_submission]
    ends = [r.finished_at for r in by_submission]
    assert starts == sorted(starts) and ends == sorted(ends)
    # One at a time by default: each started after the previous one finished.
    assert all(b >= a for a, b in zip(ends, starts[1:], strict=False))


def test_concurrency_two_runs_jobs_side_by_side(manager):
    m = manager("sleep_then_return", concurrency=2)
    assert m.warm_up(timeout=WAIT_S)
    a, b = m.submit({"seconds": 1.0}, owner="a"), m.submit({"seconds": 1.0}, owner="b")
    ra, rb = m.wait(a, timeout=WAIT_S), m.wait(b, timeout=WAIT_S)
    assert ra.status == rb.status == "succeeded"
    assert rb.report["started"] < ra.report["started"] + 0.9  # overlapped, not queued
    assert len(set(m.worker_pids())) == 2


def test_time_limit_stops_a_job(manager):
    m = manager("sleep_then_return", time_limit_s=0.5)
    run = m.wait(m.submit({"seconds": 30}, owner="a"), timeout=WAIT_S)
    assert run.status == "failed" and "time limit of 0.5 s" in run.error
    assert "pid=" in run.log  # the limit counts from the target's start, not the worker's start-up
    assert run.finished_at - run.started_at < 5


def test_history_survives_restart(tmp_path):
    with JobManager(tmp_path, target=T + "steps") as m:
        done = m.submit({"n": 2, "tag": "kept"}, owner="alice")
        m.wait(done, timeout=WAIT_S)
        failed = m.submit({"n": 1}, owner="bob")
        m.wait(failed, timeout=WAIT_S)
    with JobManager(tmp_path, target=T + "steps") as m2:
        runs = {r.id: r for r in m2.list_runs()}
        assert runs[done].status == "succeeded" and runs[done].report["tag"] == "kept"
        assert [r.id for r in m2.list_runs(owner="alice")] == [done]
        assert m2.get_run(done).position is None
        assert m2.delete_run(done, owner="alice") is True
        assert m2.get_run(done) is None


def test_run_left_running_by_a_dead_process_is_marked_interrupted(tmp_path):
    # A real app process: it starts a job, then dies by SIGKILL while the job runs.
    script = textwrap.dedent(f"""
        import sys, time
        from compressor.runs.manager import JobManager
        m = JobManager({str(tmp_path)!r}, target="tests.jobtargets:sleep_then_return")
        rid = m.submit({{"seconds": 60}}, owner="a")
        m.submit({{"seconds": 0}}, owner="b")
        seen = []
        while not any(e["kind"] == "log" and e["message"].startswith("pid=") for e in seen):
            seen += m.events(rid, since=len(seen), timeout=1.0)
        time.sleep(0.2)  # the pid reaches the store with the first progress event
        print(rid, flush=True)
        time.sleep(60)
    """)
    app = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        run_id = app.stdout.readline().strip()
        assert run_id, "the app process printed no run id"
    finally:
        app.kill()
        app.wait()
    store = RunStore(tmp_path)
    left = store.list_runs()
    assert {r.status for r in left} == {"running", "queued"}
    worker_pid = int(store.get_run(run_id).log.split("pid=")[1].split()[0])
    store.close()
    with JobManager(tmp_path, target=T + "steps") as m:
        runs = m.list_runs()
        assert len(runs) == 2 and all(r.status == "interrupted" for r in runs)
        assert "before this run finished" in m.get_run(run_id).error
        assert m.wait(m.submit({"n": 1}, owner="a"), timeout=WAIT_S).status == "succeeded"
        assert m.store.integrity_check() == "ok"
    # The orphaned worker notices its parent is gone and exits instead of computing on.
    deadline = time.monotonic() + 5
    while pid_alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker_pid)


def test_baseline_cache_is_shared_across_runs(manager):
    m = manager("use_cache")
    first = m.wait(m.submit({"key": "demo|ppl|n=8"}, owner="a"), timeout=WAIT_S)
    second = m.wait(m.submit({"key": "demo|ppl|n=8"}, owner="b"), timeout=WAIT_S)
    assert first.report["cached"] is False and second.report["cached"] is True
    assert second.report["baseline"] == first.report["baseline"]
    assert m.store.cache_get("demo|ppl|n=8") == first.report["baseline"]


def test_artifacts_are_capped_and_pruned(manager):
    m = manager("save_artifact", artifacts=ArtifactPolicy(keep_last=2, max_run_bytes=64 * 1024))
    ids = [m.submit({"kb": 8}, owner="a") for _ in range(3)]
    runs = [m.wait(r, timeout=WAIT_S) for r in ids]
    assert all(r.status == "succeeded" for r in runs)
    kept = [m.get_run(r).artifact_path for r in ids]
    assert kept[0] is None and kept[1] and kept[2]  # only the newest two stay
    assert sorted(p.name for p in m.artifact_root.iterdir()) == sorted(ids[1:])
    assert (Path(kept[2]) / "model.safetensors").stat().st_size == 8 * 1024
    big = m.wait(m.submit({"kb": 100}, owner="a"), timeout=WAIT_S)
    assert big.status == "succeeded" and big.artifact_path is None
    assert "larger than the artifact cap" in big.log
    assert not (m.artifact_root / big.id).exists()
    m.delete_run(ids[2])
    assert not Path(kept[2]).exists()


def test_follow_streams_events_until_the_end(manager):
    m = manager("steps")
    run_id = m.submit({"n": 3, "step_s": 0.05}, owner="a")
    kinds = [(e["kind"], e.get("status") or e.get("layer") or e.get("message")) for e in m.follow(run_id, 0.2)]
    assert kinds == [("status", "queued"), ("status", "running"), ("progress", 1), ("progress", 2),
                     ("progress", 3), ("log", "done 3 steps"), ("status", "succeeded")]


def test_app_main_module_is_not_rerun_in_the_worker(tmp_path):
    # `python app.py` builds the page and the manager at import time; spawn would re-run that module
    # in every worker (importing Gradio, building a second manager) unless the manager prevents it.
    app = tmp_path / "fake_app.py"
    app.write_text(textwrap.dedent(f"""
        import os
        from compressor.runs.manager import JobManager
        with open({str(tmp_path / "imports.txt")!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        m = JobManager({str(tmp_path / "data")!r}, target="tests.jobtargets:echo")
        run = m.wait(m.submit({{"x": 1}}, owner="a"), timeout={WAIT_S})
        print(run.status, run.report["pid"] != os.getpid())
        m.shutdown()
    """))
    out = subprocess.run([sys.executable, str(app)], cwd=REPO, capture_output=True, text=True, timeout=2 * WAIT_S,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.split() == ["succeeded", "True"], out.stderr[-2000:]
    assert len((tmp_path / "imports.txt").read_text().split()) == 1, "the worker re-ran the app's main module"


def test_progress_dict_validates_fields():
    assert progress_dict(Progress(stage="s", fraction=0.5))["fraction"] == 0.5
    assert progress_dict({"stage": "s", "fraction": 0.5, "layer": 2, "n_layers": 4})["layer"] == 2
    with pytest.raises(ValueError, match="unknown fields"):
        progress_dict({"stage": "s", "fraction": 0.5, "percent": 50})
    with pytest.raises(ValueError, match="stage and fraction"):
        progress_dict({"stage": "s"})


def test_local_context_for_the_cli(tmp_path):
    seen = []
    ctx = JobContext.local(tmp_path, on_progress=seen.append, on_log=seen.append)
    ctx.progress({"stage": "s", "fraction": 1.0})
    ctx.log("hello")
    ctx.cache.put("k", {"v": 1})
    assert ctx.cache.get("k") == {"v": 1} and ctx.artifact_dir.is_dir()
    assert seen[0]["stage"] == "s" and seen[1] == "hello"


@pytest.mark.slow
def test_default_target_runs_the_real_runner(tmp_path):
    # The real default target "compressor.runs.runner:run_job" on the bundled demo model, in a worker,
    # twice: the second run must find the baseline in the cache the first one filled.
    from dataclasses import fields as dc_fields

    from compressor.measure.settings import EvalSettings
    from compressor.models.loading import DEMO_DIR

    if not (DEMO_DIR / "config.json").is_file():
        pytest.skip(f"the demo model is not in {DEMO_DIR} yet")
    small = {"ppl_tokens": 256, "context": 128, "stride": 64, "arithmetic_samples": 4, "max_new_tokens": 4,
             "speed_prompt_tokens": 16, "speed_new_tokens": 4, "speed_batch": 2, "repeats": 1}
    known = {f.name for f in dc_fields(EvalSettings)}
    payload = {"model": "demo", "recipe": "int8", "eval": {k: v for k, v in small.items() if k in known}}
    with JobManager(tmp_path) as m:
        assert m.target == "compressor.runs.runner:run_job"
        first = m.submit(payload, owner="a")
        second = m.submit(payload, owner="b")
        runs = [m.wait(r, timeout=300) for r in (first, second)]
        stages = {e["stage"] for e in m.events(first) if e["kind"] == "progress"}
    for run in runs:
        assert run.status == "succeeded", f"{run.error}\n{run.log[-3000:]}"
        assert {"baseline", "compressed"} <= set(run.report), sorted(run.report)
    assert stages, "run_job reported no progress"
    reports = [run.load_report() for run in runs]  # the typed Report, whatever schema the target wrote
    assert reports[0].baseline.perplexity == reports[1].baseline.perplexity
    assert reports[0].timings.baseline_cached is False
    assert reports[1].timings.baseline_cached is True
