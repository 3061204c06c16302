"""Evaluation lengths beyond the model's trained positions are refused before any measurement, with
the setting, the model's max_position_embeddings and the largest allowed value in the message."""

from __future__ import annotations

import pytest

from compressor.errors import LabError
from compressor.measure import evaluate as ev
from compressor.measure.evaldata import load_prompts
from compressor.models.loading import load_model
from compressor.runs import measure_model, runner
from compressor.runs.contract import RunRequest

BASE = {"ppl_tokens": 512, "stride": 64, "arithmetic_samples": 0, "max_new_tokens": 2, "repeats": 1,
        "speed_prompt_tokens": 8, "speed_new_tokens": 2, "speed_batch": 1, "online_extras": False,
        "attribute_stages": False}



@pytest.fixture
def no_evaluation(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("evaluation started before the positions were checked")

    monkeypatch.setattr(measure_model, "evaluate_quality", refuse)
    monkeypatch.setattr(runner, "measure_quality", refuse)
    monkeypatch.setattr(runner, "measure_performance", refuse)


@pytest.mark.parametrize("settings,needles", [
    # 256 tokens + BOS = 257 positions
    ({"context": 256}, ["context=256", "max_position_embeddings=256", "context <= 255", "BOS"]),
    ({"context": 128, "speed_prompt_tokens": 250, "speed_new_tokens": 16},
     ["speed_prompt_tokens=250", "speed_new_tokens=16", "max_position_embeddings=256", "speed_prompt_tokens <= 240"]),
    ({"context": 128, "max_new_tokens": 256}, ["max_new_tokens=256", "max_position_embeddings=256"]),
])
def test_lengths_beyond_the_positions_are_refused_before_evaluation(tiny_folder, no_evaluation, settings, needles):
    with pytest.raises(LabError) as e:
        runner.run(RunRequest(model=str(tiny_folder), recipe="int8", hardware="t4", eval=BASE | settings))
    for needle in needles:
        assert needle in str(e.value)


def test_the_largest_allowed_lengths_pass():
    model, tok = load_model("demo")
    n = model.config.max_position_embeddings  # 512
    ok = ev.EvalSettings.from_dict(BASE | {"context": n - 1, "speed_prompt_tokens": n - 16, "speed_new_tokens": 16})
    ev.check_positions(model, tok, ok, n_tokens=4096, prompts=load_prompts())
    with pytest.raises(LabError, match="context <= 511"):
        ev.check_positions(model, tok, ev.EvalSettings.from_dict(BASE | {"context": n}), 4096, [])
    # a window is no longer than the scored text: context 512 over 129 tokens feeds 130 positions
    ev.check_positions(model, tok, ev.EvalSettings.from_dict(BASE | {"context": n}), 129, [])


@pytest.mark.parametrize("settings", [
    {},  # the app's defaults (EvalSettings' own)
    {"ppl_tokens": 128, "context": 64, "stride": 32, "arithmetic_samples": 8, "max_new_tokens": 8},  # test_app_api
    {"context": 2048, "ppl_tokens": 128},  # the page's largest context, over the smallest text
])
def test_app_and_test_settings_stay_valid_for_the_demo_model(settings):
    model, tok = load_model("demo")
    s = ev.EvalSettings.from_dict(settings)
    text_tokens = ev.eval_tokens(tok, "word " * 4 * s.ppl_tokens, s.ppl_tokens).numel()
    ev.check_positions(model, tok, s, text_tokens, load_prompts())
