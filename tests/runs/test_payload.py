"""Job payloads and CLI-level inputs that are not what they should be get a LabError naming the key."""

import pytest

from compressor.errors import LabError
from compressor.measure.hardware import get_profile
from compressor.runs.context import JobContext
from compressor.runs.contract import RunRequest
from compressor.runs.runner import run_job

BASE = {"model": "demo", "recipe": "int8"}


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))


@pytest.mark.parametrize("key", ["allow_pickle", "trust_remote_code"])
@pytest.mark.parametrize("value", ["false", "no", "0", 0, 1, None])
def test_safety_flags_must_be_real_booleans(key, value):
    """bool("false") is True: a string must never switch on remote code or pickle loading."""
    with pytest.raises(LabError, match=rf"'{key}'=.* must be true or false"):
        run_job({**BASE, key: value}, JobContext.local(on_log=None))


@pytest.mark.parametrize("payload, match", [
    ({**BASE, "context": "256"}, "context"),
    ({**BASE, "eval": "fast"}, "'eval'='fast' must be a mapping"),
    ({**BASE, "eval": 3}, "'eval'=3 must be a mapping"),
    ({**BASE, "projection_context": None}, "'projection_context'=None must be a positive integer"),
    ({**BASE, "projection_batch": [1]}, r"'projection_batch'=\[1\] must be a positive integer"),
    ({**BASE, "model": 42}, "'model'=42 must be a non-empty string"),
    ({**BASE, "device": None}, "'device'=None must be a non-empty string"),
    ({**BASE, "recipe": 3.5}, "'recipe'=3.5 must be a preset name"),
    ({**BASE, "hardware": "../models/lab-llama-7m/config"}, "not a known profile"),
])
def test_bad_payload_values_are_lab_errors(payload, match):
    """All refused before the model is loaded (a run would take seconds; these take milliseconds)."""
    with pytest.raises(LabError, match=match):
        run_job(payload, JobContext.local(on_log=None))


def test_a_context_given_as_text_is_refused_by_the_settings_not_a_type_error():
    with pytest.raises(LabError, match="context='256' is not valid"):
        RunRequest.from_dict({**BASE, "context": "256"})


def test_hardware_ids_are_file_stems_not_paths():
    with pytest.raises(LabError, match="not a known profile"):
        get_profile("../hardware/t4")
    assert get_profile("t4").id == "t4"
