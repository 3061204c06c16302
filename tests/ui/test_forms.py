"""The stage builder: every registered method gets a form, and its untouched form makes a valid stage."""

from __future__ import annotations

import gradio as gr
import pytest

from compressor.engine.fields import method_forms
from compressor.engine.recipe import load_recipe
from compressor.errors import LabError
from ui.forms import stage_form

METHODS = method_forms()


@pytest.fixture(scope="module")
def forms():
    with gr.Blocks():
        return {name: stage_form(m) for name, m in METHODS.items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_each_methods_form_builds_and_its_defaults_make_a_valid_stage(forms, name):
    form = forms[name]
    assert [w.label.removesuffix(" (YAML)") for w in form.widgets] == [s.name for s in METHODS[name].fields]
    stage = form.stage([w.value for w in form.widgets])
    assert stage["method"] == name
    assert load_recipe({"stages": [stage]}).stages[0].to_dict()["method"] == name
    assert name in form.help and METHODS[name].kind in form.help


def test_a_bad_value_names_the_field(forms):
    form = forms["rtn"]
    values = [1.5 if s.name == "bits" else w.value for s, w in zip(METHODS["rtn"].fields, form.widgets, strict=True)]
    with pytest.raises(LabError, match="bits"):
        form.stage(values)
