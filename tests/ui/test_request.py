"""The page's inputs become one RunRequest: the same request the CLI and a job payload make for the same
settings, with every default the contract's (the stride above all: the page used to pick its own)."""

from __future__ import annotations

import json

import pytest

from compressor.errors import LabError
from compressor.runs.contract import RunRequest
from ui.request import EVAL_FIELDS, build_request, eval_default

SMALL_EVAL = (128, 64, 8, 8)  # text tokens, context, arithmetic problems, new tokens (EVAL_FIELDS order)


def test_the_request_holds_the_settings_and_the_contracts_defaults():
    r = build_request(" demo ", "w4-g128", "t4", *SMALL_EVAL)
    assert (r.model, r.hardware) == ("demo", "t4")
    assert [s.to_dict()["bits"] for s in r.recipe.stages] == [4]
    assert (r.eval.ppl_tokens, r.eval.context, r.eval.arithmetic_samples, r.eval.max_new_tokens) == SMALL_EVAL
    assert r.eval.stride == 32  # half the context, as the CLI and every payload resolve it
    assert RunRequest.from_dict(json.loads(json.dumps(r.to_dict()))) == r  # the payload the job receives


@pytest.mark.parametrize("context", [16, 256, 1024, 2048])
def test_the_page_and_a_payload_with_the_same_settings_ask_for_the_same_run(context):
    values = dict(zip(EVAL_FIELDS, SMALL_EVAL, strict=True)) | {"context": context}
    page = build_request("demo", "stages:\n- {method: rtn, bits: 4, group_size: 128}\n", "this-machine",
                         *values.values())
    payload = RunRequest.from_dict({"model": "demo", "recipe": "w4-g128", "eval": values})
    assert page == payload


def test_the_page_and_the_cli_ask_for_the_same_run():
    cli = pytest.importorskip("compressor.cli.run", reason="the CLI's request builder has not landed")
    from compressor.cli import build_parser

    args = build_parser().parse_args(["run", "--model", "demo", "--recipe", "w4-g128", "--hardware", "t4",
                                      "--ppl-tokens", "128", "--context", "512", "--samples", "8",
                                      "--max-new-tokens", "8"])
    assert build_request("demo", "w4-g128", "t4", 128, 512, 8, 8) == cli.request_from_args(args)


def test_the_sliders_start_at_the_engine_defaults():
    from compressor.runs.contract import EvalSettings

    defaults = EvalSettings()
    for name, (_, lo, hi) in EVAL_FIELDS.items():
        assert eval_default(name) == min(max(getattr(defaults, name), lo), hi)


@pytest.mark.parametrize("args, expected", [
    (("", "int8", "t4", *SMALL_EVAL), "no model given"),
    (("demo", "", "t4", *SMALL_EVAL), "recipe is empty"),
    (("demo", "stages: [method: rtn", "t4", *SMALL_EVAL), "not valid JSON or YAML"),
    (("demo", "no-such-preset", "t4", *SMALL_EVAL), "preset name"),
    (("demo", "int8", "t4", 100, 64, 8, 8), "out of range: use 128 to 16384"),
    (("demo", "int8", "t4", 128, 64.5, 8, 8), "not a whole number"),
    (("demo", "int8", "t4", 128, None, 8, 8), "out of range"),
    (("demo", "int8", "t4", 128, 64, 8), "expected 4 evaluation settings"),
])
def test_bad_settings_are_refused_naming_the_field(args, expected):
    with pytest.raises(LabError, match=expected):
        build_request(*args)


@pytest.mark.parametrize("preset", ["quick", "standard", "thorough"])
def test_the_evaluation_preset_sets_what_the_page_does_not_show(preset):
    from compressor.measure.settings import PRESETS

    sliders = [PRESETS[preset][name] for name in EVAL_FIELDS]
    r = build_request("demo", "int8", "t4", *sliders, evaluation=preset)
    assert r.eval.preset == preset and r.eval.repeats == PRESETS[preset]["repeats"]
    changed = build_request("demo", "int8", "t4", *sliders[:-1], sliders[-1] + 1, evaluation=preset)
    assert changed.eval.preset == "custom" and changed.eval.repeats == PRESETS[preset]["repeats"]
    with pytest.raises(LabError, match="not a preset"):
        build_request("demo", "int8", "t4", *sliders, evaluation="forever")
