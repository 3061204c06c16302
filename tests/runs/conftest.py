"""Fixtures of the job-system tests: job managers on a fresh data folder, shut down after the test."""

from __future__ import annotations

import pytest

from compressor.runs.manager import JobManager

T = "tests.jobtargets:"


@pytest.fixture
def manager(tmp_path):
    """`manager(target="steps", **kwargs)`: a JobManager running tests/jobtargets.py's `target`."""
    managers = []

    def make(target="steps", **kwargs):
        m = JobManager(tmp_path, target=T + target, **kwargs)
        managers.append(m)
        return m

    yield make
    for m in managers:
        m.shutdown()
