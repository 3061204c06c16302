"""The runner through the job manager with a real worker: results stream in as measured (quality,
then speed, then the rest), and a cancel by the run's owner stops the worker within a second and lets
the next run start."""

from __future__ import annotations

import time

from compressor.runs.contract import Report
from compressor.runs.manager import JobManager
from compressor.runs.runner import check_payload
from tests.runs.procs import pid_alive

WAIT_S = 300
PAYLOAD = {"model": "demo", "recipe": "w4-g128", "hardware": "t4",
           "eval": {"preset": "quick", "ppl_tokens": 256, "arithmetic_samples": 8, "max_new_tokens": 4}}


def _wait_for(predicate, timeout: float = WAIT_S, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"not reached within {timeout} s")


def test_partial_reports_stream_quality_then_speed_and_a_cancel_frees_the_worker(tmp_path):
    with JobManager(tmp_path, check_payload=check_payload) as m:
        first = m.submit(PAYLOAD, owner="v-a")
        partials = []

        def collect():
            report = m.partial_report(first)
            if report is not None and (not partials or report["pending"] != partials[-1]["pending"]):
                partials.append(report)
            return m.status(first) == "succeeded" or m.status(first) == "failed"

        _wait_for(collect, poll=0.02)
        run = m.get_run(first)
        assert run.status == "succeeded", run.error
        final = run.load_report()
        events = [e for e in m.events(first) if e["kind"] == "partial"]
        assert [e["pending"] for e in events] == [["speed", "samples", "projection"], ["samples", "projection"]]
        assert [p["pending"] for p in partials] == [e["pending"] for e in events][:len(partials)] and partials
        quality = Report.from_dict(partials[0])
        assert quality.compressed.kld == final.compressed.kld and quality.compressed.speed is None
        assert quality.samples == [] and quality.projection is None and final.pending == []
        assert final.projection is not None and final.samples and final.request.eval.preset == "custom"
        assert m.partial_report(first) is None  # over: the stored report is the result

        # Cancel mid-run: the worker is killed within a second, the run ends cancelled, the next one starts.
        doomed = m.submit(PAYLOAD, owner="v-b")
        # valid at submit, refused by the run's preflight at once when it starts
        following = m.submit({**PAYLOAD, "recipe": {"method": "rtn", "targets": "nomatch"}}, owner="v-c")
        _wait_for(lambda: (m.latest_progress(doomed) or {}).get("stage") in ("evaluate-baseline", "compress",
                                                                             "evaluate-compressed"))
        pid = m.worker_pids()[0]
        t0 = time.monotonic()
        assert m.cancel(doomed, owner="v-b")
        _wait_for(lambda: m.status(doomed) == "cancelled", timeout=5, poll=0.01)
        took = time.monotonic() - t0
        assert took < 1.0, f"cancel took {took:.2f} s"
        assert not pid_alive(pid)
        assert m.get_run(doomed).error == "cancelled while running"
        assert m.wait(following, timeout=WAIT_S).status == "failed"  # it ran: the queue moved on
        assert "matches no linear layer" in m.get_run(following).error

