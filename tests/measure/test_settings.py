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


def test_the_default_is_the_quick_preset_and_presets_resolve_every_value():
    from compressor.measure.settings import PRESETS

    assert EvalSettings().preset == "quick" and EvalSettings().values() == PRESETS["quick"]
    for name, values in PRESETS.items():
        s = EvalSettings.named(name)
        assert s.preset == name and s.values() == values
        assert EvalSettings.from_dict(s.to_dict()).to_dict() == s.to_dict()  # a stored request reads back


@pytest.mark.parametrize("d, preset, check", [
    ({"preset": "thorough"}, "thorough", {"repeats": 5, "arithmetic_samples": 200}),
    ({"preset": "thorough", "repeats": 7}, "custom", {"repeats": 7, "arithmetic_samples": 200}),
    ({"preset": "standard", "context": 128}, "custom", {"context": 128, "stride": 64}),  # the stride follows
    ({"ppl_tokens": 2048}, "custom", {"ppl_tokens": 2048, "repeats": 1}),
    ({"preset": "custom", "repeats": 2}, "custom", {"repeats": 2}),
    ({**EvalSettings.named("standard").values()}, "standard", {}),  # values alone name their preset
])
def test_a_preset_with_changes_records_what_it_measured(d, preset, check):
    s = EvalSettings.from_dict(d)
    assert s.preset == preset and all(getattr(s, k) == v for k, v in check.items())


def test_unknown_presets_and_hand_set_labels_are_refused():
    with pytest.raises(LabError, match="eval preset 'fast' is not known: use one of quick, standard, thorough"):
        EvalSettings.from_dict({"preset": "fast"})
    with pytest.raises(LabError, match="not known"):
        EvalSettings.named("instant")
    with pytest.raises(TypeError):
        EvalSettings(preset="thorough")  # derived from the values, never set by hand
