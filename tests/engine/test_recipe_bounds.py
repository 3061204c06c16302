"""Recipe input bounds (compressor/engine/bounds.py): every refusal names the limit and its number, and
comes before anything is expanded; ordinary recipes and patterns pass."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from compressor.engine import bounds
from compressor.engine.recipe import Recipe, load_recipe
from compressor.errors import RecipeError

STAGE = {"method": "rtn", "bits": 4}
BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
       "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\nstages: [{method: rtn, bits: 4}]\n"


@pytest.mark.parametrize("recipe, needle", [
    ("x" * (bounds.MAX_RECIPE_CHARS + 1), "at most 32,768 characters (MAX_RECIPE_CHARS)"),
    ("stages:\n" + "  - {method: rtn}\n" * 6000, "(MAX_RECIPE_CHARS)"),
    (BOMB, "YAML aliases"),
    ("base: &b {method: rtn, bits: 4}\nstages: [{<<: *b, bits: 8}]", "YAML aliases"),
    ("[" * 3000 + "]" * 3000, "nests at most 8 levels (MAX_RECIPE_DEPTH)"),
    ("stages:\n" + "  - x: [[[[[[[[1]]]]]]]]\n", "MAX_RECIPE_DEPTH"),
    (json.dumps({"stages": [{"method": "rtn", "pad": list(range(2500))}]}), "at most 2,000 values (MAX_RECIPE_NODES)"),
    ({"stages": [dict(STAGE) for _ in range(9)]}, "at most 8 stages (MAX_STAGES)"),
    ({"stages": [{**STAGE, "ignore": [f"x{i}" for i in range(33)]}]}, "at most 32 ignore entries (MAX_LIST_ITEMS)"),
    ({"stages": [{**STAGE, "overrides": [{"pattern": f"x{i}"} for i in range(33)]}]}, "overrides entries"),
    ({**STAGE, "targets": "^(.|.)*Z$"}, "holds an alternation"),
    ({**STAGE, "targets": "(a+)+$"}, "holds another quantifier"),
    ({**STAGE, "targets": "(?:x.*){3}"}, "holds another quantifier"),
    ({**STAGE, "ignore": [".*.*.*Z"]}, "at most 2 are allowed (MAX_PATTERN_REPEATS)"),
    ({**STAGE, "overrides": [{"pattern": "(a)\\1", "bits": 8}]}, "backreferences"),
    ({**STAGE, "targets": "a" * 300}, "at most 256 characters (MAX_PATTERN_CHARS)"),
    ("a: 1" + "0" * 5000, "holds a value that cannot be read"),
    ('{"stages": [{"method": "rtn", "bits": 1' + "0" * 5000 + "}]}", "holds a value that cannot be read"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 60 and "\n" not in v else "")
def test_out_of_bounds_recipes_are_refused_naming_the_limit(recipe, needle):
    with pytest.raises(RecipeError, match=re.escape(needle)):
        load_recipe(recipe)


@pytest.mark.parametrize("pattern", [
    r".*", r"(q|k|v)_proj$", r"^model\.layers\.\d+\.mlp\.(gate|up)_proj$", r"^(?!.*down_proj).*",
    r"layers\.(0|1|2)\.", r"\d{1,3}", r"((?!lm_head).)*", r"(^|\.)lm_head$", r"[ab]*c",
])
def test_ordinary_patterns_pass(pattern):
    bounds.check_pattern("targets", pattern)
    assert load_recipe({**STAGE, "targets": pattern}).stages[0].targets == pattern


def test_shared_references_stop_the_walk_at_the_limit():
    # what PyYAML's own safe_load makes of an alias bomb: a few objects, billions of paths
    data = yaml.safe_load(BOMB.replace("stages: [{method: rtn, bits: 4}]\n", "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"))
    with pytest.raises(RecipeError, match="MAX_RECIPE_NODES"):
        Recipe.from_dict(data)


@pytest.mark.parametrize("content, needle", [
    ("stages: [{method: rtn, bits: 4, targets: 'café'}]".encode("latin-1"), "not UTF-8 text .*iconv"),
    (b"\x00\x01\x02binary", "binary \\(it holds NUL bytes\\)"),
    (b"x" * (4 * bounds.MAX_RECIPE_CHARS + 1), "the file is 131,073 bytes"),
])
def test_recipe_files_that_are_not_utf8_text_or_too_large_are_refused(tmp_path, content, needle):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=needle):
        load_recipe(path)


def test_a_utf8_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("\ufeffstages: [{method: rtn, bits: 8}]\n".encode())
    assert load_recipe(str(path)).stages[0].bits == 8


def test_a_request_never_reads_a_file_named_in_its_recipe(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("stages: [{method: rtn, bits: 8}]\n")
    with pytest.raises(RecipeError, match="not a file name: paste the file's text"):
        load_recipe(str(path), files=False)
