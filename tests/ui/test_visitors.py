"""Owners through the app's HTTP API (gradio_client): each API session is a visitor of its own. Runs go to
a job manager whose jobs only sleep (the `sleepy` fixture), because what is tested is whose run is whose:
cancel, the queue limit, what a visitor may open."""

from __future__ import annotations

import time

import pytest

from tests.ui.pages import client, owner_of_client, run_args

gradio_client = pytest.importorskip("gradio_client")


def _wait(manager, owner: str, status: str, timeout: float = 60.0):
    """The newest run of `owner` once it is `status`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = manager.list_runs(owner=owner, limit=1, include_report=False)
        if runs and manager.status(runs[0].id) == status:
            return manager.get_run(runs[0].id)
        time.sleep(0.1)
    raise AssertionError(f"no {status} run of {owner} within {timeout} s")


def _cancel_all(manager, owners) -> None:
    """Ends every unfinished run of `owners`: queued ones first, so that none starts a worker."""
    runs = [r for o in owners for r in manager.list_runs(owner=o, include_report=False)]
    for run in sorted(runs, key=lambda r: manager.position(r.id) or 0, reverse=True):
        manager.cancel(run.id)


def test_a_session_cancels_its_own_run_and_not_another_sessions(sleepy):
    alice, bob = client(sleepy.url), client(sleepy.url)
    job = alice.submit(*run_args(), api_name="/run")
    run = _wait(sleepy.manager, owner_of_client(alice), "running")

    assert bob.predict(api_name="/cancel") == "Nothing is running."  # bob's session has no run
    with pytest.raises(gradio_client.exceptions.AppError, match="yours or shared") as refused:
        bob.predict(run.id, False, api_name="/show_run")  # nor can bob pick alice's run to act on it
    assert "Traceback" not in str(refused.value)
    assert sleepy.manager.status(run.id) == "running"

    t0 = time.monotonic()
    assert f"Cancelling run `{run.id}`" in alice.predict(api_name="/cancel")
    done = sleepy.manager.wait(run.id, timeout=30)
    print(f"cancelled {time.monotonic() - t0:.2f} s after /cancel")
    assert done.status == "cancelled"
    outputs = job.result(timeout=60)
    assert "cancelled" in outputs[1]  # the status line of /run's last output (State outputs are not sent)

    # the next run starts (the cancel freed the worker and the visitor's queue)
    again = alice.submit(*run_args(), api_name="/run")
    second = _wait(sleepy.manager, owner_of_client(alice), "running")
    assert second.id != run.id
    assert "Cancelling" in alice.predict(api_name="/cancel")
    assert sleepy.manager.wait(second.id, timeout=30).status == "cancelled"
    again.result(timeout=60)


def test_four_visitors_each_queue_up_to_the_limit_and_no_further(sleepy):
    limit = sleepy.manager.max_queued_per_owner
    visitors = [client(sleepy.url) for _ in range(4)]
    owners = [owner_of_client(v) for v in visitors]
    jobs = []
    try:
        for v in visitors:
            jobs += [v.submit(*run_args(), api_name="/run") for _ in range(limit)]
        deadline = time.monotonic() + 60
        while sum(len(sleepy.manager.list_runs(owner=o, include_report=False)) for o in owners) < 4 * limit:
            assert time.monotonic() < deadline, "not every visitor's runs were accepted"
            time.sleep(0.1)
        for v, owner in zip(visitors, owners, strict=True):
            assert len(sleepy.manager.list_runs(owner=owner, include_report=False)) == limit
            refused = v.predict(*run_args(), api_name="/run")
            assert "Cannot start" in refused[1] and f"limit is {limit}" in refused[1], refused[1]
            assert "Traceback" not in refused[1]
    finally:
        _cancel_all(sleepy.manager, owners)
    for job in jobs:
        assert "cancelled" in job.result(timeout=60)[1]


def test_a_session_sees_only_its_own_runs_in_its_history(sleepy):
    alice, bob = client(sleepy.url), client(sleepy.url)
    job = alice.submit(*run_args(), api_name="/run")
    run = _wait(sleepy.manager, owner_of_client(alice), "running")
    try:
        ids = {row[-2] for row in alice.predict("KL to baseline (lower better)", "Weight memory", "t4",
                                                 api_name="/history")[0]["data"]}
        assert run.id in ids
        theirs = bob.predict("KL to baseline (lower better)", "Weight memory", "t4", api_name="/history")[0]
        assert run.id not in {row[-2] for row in theirs["data"]}
    finally:
        alice.predict(api_name="/cancel")
        job.result(timeout=60)


def test_cancelling_a_queued_run_answers_with_its_end_not_cancelling(sleepy):
    """A queued run ends the moment it is cancelled, and its /run stream may say so before /cancel answers:
    /cancel then says it ended, so the status line is right whichever answer lands last (it said
    "Cancelling..." for ever when the stream's last line came first)."""
    alice, bob = client(sleepy.url), client(sleepy.url)
    owners = [owner_of_client(alice), owner_of_client(bob)]
    try:
        alice.submit(*run_args(), api_name="/run")
        _wait(sleepy.manager, owners[0], "running")  # the only worker is busy
        job = bob.submit(*run_args(), api_name="/run")
        queued = _wait(sleepy.manager, owners[1], "queued")
        answer = bob.predict(api_name="/cancel")
        assert f"Run `{queued.id}` cancelled" in answer and "Cancelling" not in answer
        assert "cancelled" in job.result(timeout=60)[1]
    finally:
        _cancel_all(sleepy.manager, owners)
