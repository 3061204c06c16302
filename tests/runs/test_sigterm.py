"""SIGTERM (how a Space stops its container) handled like a stop: the running run is marked
interrupted by the app itself, nothing else is lost, and a restart on the same data folder goes on."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from compressor.runs.manager import JobManager
from compressor.runs.signals import EXIT_SIGTERM
from tests.runs.procs import pid_alive

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120

APP = textwrap.dedent("""
    import json, sys, time
    from compressor.runs.manager import JobManager
    from compressor.runs.signals import stop_on_sigterm

    m = JobManager(sys.argv[1], target="tests.jobtargets:dispatch")
    stop_on_sigterm(m)
    done = m.wait(m.submit({"fn": "echo", "x": 1}, owner="v-a"), timeout=120)
    running = m.submit({"fn": "sleep_then_return", "seconds": 600}, owner="v-b")
    queued = m.submit({"fn": "echo", "x": 2}, owner="v-c")
    while m.status(running) != "running":
        time.sleep(0.05)
    print(json.dumps({"done": done.id, "running": running, "queued": queued, "worker": m.worker_pids()[0]}),
          flush=True)
    while True:
        time.sleep(0.1)  # what Gradio's launch(block=True) does in the main thread
""")


def test_sigterm_marks_the_running_run_interrupted_and_a_restart_goes_on(tmp_path):
    app = subprocess.Popen([sys.executable, "-c", APP, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        ids = json.loads(app.stdout.readline() or "{}")
        assert ids, app.stderr.read()[-3000:]
        time.sleep(0.5)  # the worker is inside the target's sleep
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=WAIT_S) == EXIT_SIGTERM, app.stderr.read()[-3000:]
    finally:
        if app.poll() is None:
            app.kill()
    deadline = time.monotonic() + 10
    while pid_alive(ids["worker"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(ids["worker"])

    with sqlite3.connect(tmp_path / "runs.sqlite3") as db:  # as the app left it, before any restart
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, status, error, report FROM runs")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert rows[ids["running"]][:2] == ("interrupted", "the app was stopped (SIGTERM) while this run was going; "
                                                       "submit it again")
    assert rows[ids["queued"]][0] == "interrupted"
    assert rows[ids["done"]][0] == "succeeded" and json.loads(rows[ids["done"]][2])["payload"]["x"] == 1

    with JobManager(tmp_path, target="tests.jobtargets:dispatch") as m:  # the restart
        assert m.get_run(ids["done"]).report["payload"]["x"] == 1
        assert m.get_run(ids["running"]).status == "interrupted"
        assert m.wait(m.submit({"fn": "echo", "x": 3}, owner="v-a"), timeout=WAIT_S).status == "succeeded"
        assert len(m.list_runs()) == 4

