"""ui/records.py: the page's one way in for a stored run's report."""

from __future__ import annotations

import pytest

from compressor.errors import LabError
from tests.ui.reports import V1, run_of, stored
from ui.records import has_saved_model, report_of


def test_a_finished_runs_report_is_opened_once():
    first = run_of(stored(V1[0]), id="cache-a", finished_at=2.0)
    again = run_of(stored(V1[0]), id="cache-a", finished_at=2.0)
    other = run_of(stored(V1[0]), id="cache-b", finished_at=2.0)
    assert report_of(first) is report_of(again)
    assert report_of(other) is not report_of(first) and report_of(other).to_dict() == report_of(first).to_dict()


def test_no_report_is_none_and_a_bad_one_is_a_lab_error_every_time():
    assert report_of(run_of(None, status="failed")) is None
    bad = run_of({"schema_version": 99}, id="cache-bad", finished_at=2.0)
    for _ in range(2):
        with pytest.raises(LabError, match="update the lab"):
            report_of(bad)


def test_a_saved_model_is_a_folder_with_its_config(tmp_path):
    assert not has_saved_model(run_of(artifact_path=None))
    assert not has_saved_model(run_of(artifact_path=str(tmp_path)))  # a report only, or pruned
    (tmp_path / "config.json").write_text("{}")
    assert has_saved_model(run_of(artifact_path=str(tmp_path)))
