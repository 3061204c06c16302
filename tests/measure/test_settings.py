"""Evaluation settings refuse values out of bounds, naming the setting."""

import pytest

from compressor.errors import LabError
from compressor.measure.settings import EvalSettings


def test_eval_settings_bounds_name_the_setting():
    with pytest.raises(LabError, match="context"):
        EvalSettings(context=100_000)
    with pytest.raises(LabError, match="stride"):
        EvalSettings(context=64, stride=128)
    with pytest.raises(LabError, match="unknown"):
        EvalSettings.from_dict({"contxt": 64})
