"""Field specs for forms (compressor/engine/fields.py): kinds, choices, help text, widget values."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from compressor.engine.fields import (
    FieldSpec,
    config_fields,
    field_help,
    method_forms,
    parse_args_doc,
    stage_from_values,
)
from compressor.engine.methods.gptq import GPTQConfig
from compressor.engine.methods.prune_magnitude import MagnitudeConfig
from compressor.engine.methods.rtn import RTNConfig
from compressor.engine.recipe import load_recipe
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError


def test_args_section_is_read_with_continuations_and_shared_entries():
    doc = """Title.

    Args:
        bits: weight bits;
            2, 3, 4 or 8.
        a, b / c: shared text.
        rate (float): with a type.

    Returns:
        nothing: not an argument.
    """
    assert parse_args_doc(doc) == {"bits": "weight bits; 2, 3, 4 or 8.", "a": "shared text.", "b": "shared text.",
                                   "c": "shared text.", "rate": "with a type."}
    assert parse_args_doc("No section.") == {} and parse_args_doc(None) == {}


def test_help_prefers_a_base_entry_over_a_cross_reference_or_a_shared_line():
    help_text = field_help(MagnitudeConfig)
    assert help_text["sparsity"].startswith("fraction of weights zeroed")  # not "see SparsityConfig."
    assert help_text["comparison"].startswith("unstructured comparison group")
    assert help_text["targets"].startswith("regex searched in qualified module names")  # StageConfig's own
    assert field_help(RTNConfig)["bits"] == "2, 3, 4 or 8."  # the method's own words win over its base's


@dataclass
class _Demo(StageConfig):
    """Args:
    flag: a bool.
    count: an int.
    limit: optional float.
    names: a list.
    """

    flag: bool = True
    count: int = 3
    limit: float | None = None
    names: list[str] = field(default_factory=lambda: ["x"])


def test_kinds_defaults_choices_and_order():
    specs = {s.name: s for s in config_fields(_Demo)}
    assert [s.name for s in config_fields(_Demo)][-3:] == ["targets", "ignore", "overrides"]
    assert (specs["flag"].kind, specs["count"].kind, specs["limit"].kind, specs["names"].kind) == \
        ("bool", "int", "float", "yaml")
    assert specs["limit"].optional and not specs["count"].optional
    assert specs["names"].default == ["x"] and specs["names"].initial == "[x]"
    assert specs["targets"].selection and not specs["flag"].selection
    gptq = {s.name: s for s in config_fields(GPTQConfig)}
    assert gptq["actorder"].kind == "choice" and gptq["actorder"].choices == ("none", "static", "group")


@pytest.mark.parametrize("kind, value, parsed", [
    ("int", 4.0, 4), ("int", "8", 8), ("float", "0.5", 0.5), ("yaml", "[lm_head, embed]", ["lm_head", "embed"]),
    ("yaml", "  ", None), ("str", "", ""), ("bool", False, False), ("choice", "group", "group"), ("int", None, None),
])
def test_widget_values_parse_to_config_values(kind, value, parsed):
    assert FieldSpec("x", kind, None, "").parse(value) == parsed


@pytest.mark.parametrize("kind, value, fix", [("int", 4.5, "whole number"), ("float", "abc", "give a number"),
                                              ("yaml", "[unclosed", "not valid YAML")])
def test_bad_widget_values_name_the_field(kind, value, fix):
    with pytest.raises(RecipeError, match=rf"stage 'rtn': x=.*{fix}"):
        FieldSpec("x", kind, None, "").parse(value, "rtn")


def test_stage_from_values_builds_a_stage_the_recipe_accepts():
    stage = stage_from_values("gptq", {"bits": 3.0, "group_size": 64.0, "actorder": "group", "ignore": "",
                                       "overrides": "[{pattern: down_proj, bits: 8}]"})
    assert stage == {"method": "gptq", "bits": 3, "group_size": 64, "actorder": "group",
                     "overrides": [{"pattern": "down_proj", "bits": 8}]}
    assert load_recipe([stage]).stages[0].actorder == "group"
    with pytest.raises(RecipeError, match="gptq has the fields"):
        stage_from_values("gptq", {"bitz": 4})


def test_every_method_has_a_form():
    forms = method_forms()
    assert {"rtn", "gptq", "kivi", "distill"} <= set(forms)
    assert forms["gptq"].needs_calibration and not forms["rtn"].needs_calibration
    assert forms["distill"].needs_teacher and forms["kivi"].kind == "kv"
    assert forms["rtn"].summary == "Round-to-nearest weight quantization."
