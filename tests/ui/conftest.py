"""The page's end-to-end fixtures, each started once per test session and shared by every test file here:

- `served`: the app as it is deployed (real runner in worker processes) over the session's demo run data
  folder, so runs with the demo run's evaluation settings find its baseline in the cache;
- `sleepy`: the same page over a job manager whose jobs only sleep (tests.jobtargets), for what is about
  owners, queues and cancelling rather than about compressing: no model is loaded;
- `browser` (tests/conftest.py, shared with tests/fit): one headless Chromium (Debian's), skipped where it is not installed.

Each gradio_client.Client is a session of its own, and each browser context a visitor of its own, so tests
sharing an app see only their own runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.helpers import free_port
from tests.ui.pages import GRACE_S, SLEEP_TARGET


@pytest.fixture(scope="session")
def served(demo_run):
    from ui.page import serve, stop

    demo, url, managers = serve(demo_run.data_dir, port=free_port(), block=False, quiet=True)
    try:
        yield SimpleNamespace(url=url, manager=managers[0], ask_manager=managers[1], data_dir=demo_run.data_dir)
    finally:
        stop(demo, managers)


@pytest.fixture(scope="session")
def sleepy(tmp_path_factory):
    from compressor.runs.manager import JobManager
    from ui.page import serve, stop

    data = tmp_path_factory.mktemp("sleepy")
    manager = JobManager(data, target=SLEEP_TARGET, concurrency=1, time_limit_s=120, max_queued_per_owner=3,
                         owner_grace_s=GRACE_S)
    demo, url, managers = serve(port=free_port(), block=False, quiet=True, managers=(manager, None))
    try:
        yield SimpleNamespace(url=url, manager=manager, data_dir=data)
    finally:
        stop(demo, managers)


