"""docs/limits.md states every limit with the number the code enforces: a changed constant or default
fails here until the doc says the new number."""

from __future__ import annotations

import re

import pytest

from compressor.measure.settings import EvalSettings
from compressor.paths import REPO
from compressor.runs.config import SETTINGS
from compressor.runs.limits import limits_table

DOC = (REPO / "docs" / "limits.md").read_text()


def _rows() -> dict[str, str]:
    """The doc's table rows: first cell (without backticks) -> second cell."""
    rows = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def _number(value) -> str:
    if isinstance(value, tuple):
        return f"{value[0]:,} to {value[1]:,}"
    return f"{value:,}"


@pytest.mark.parametrize("name", list(limits_table()))
def test_each_input_limit_is_in_the_doc_with_its_value(name):
    value, _ = limits_table()[name]
    assert _rows().get(name) == _number(value), f"docs/limits.md: `{name}` should read {_number(value)}"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_environment_setting_is_in_the_doc_with_its_default(name):
    s = SETTINGS[name]
    default = "off" if s.default is None else f"{s.default:g}"
    assert _rows().get(s.env) == default, f"docs/limits.md: `{s.env}` should read {default}"


@pytest.mark.parametrize("name", list(EvalSettings.BOUNDS))
def test_each_eval_setting_bound_is_in_the_doc(name):
    assert re.match(re.escape(_number(EvalSettings.BOUNDS[name])), _rows().get(name, "")), name


def test_the_battery_counts_are_the_tests_counts():
    from tests.runs import test_bad_inputs as battery

    counts = {"CLI": len(battery.CLI), "API": len(battery.API), "OWNERS": len(battery.OWNERS),
              "WORKER": len(battery.WORKER), "EDGE": len(battery.EDGE)}
    for name, n in counts.items():
        assert f"`{name}` {n}" in DOC or (name == "CLI" and f"| {n} | `tests/runs/test_bad_inputs.py` (`CLI`)" in DOC), name
    api = counts["API"] + counts["OWNERS"] + 2 + counts["WORKER"]
    assert f"| {api} | `tests/runs/test_bad_inputs.py` (`API`" in DOC
    edge = counts["EDGE"] + 3 + 1  # damaged database files, one list of bad variables
    assert f"| {edge} | `tests/runs/test_bad_inputs.py` (`EDGE`" in DOC
    page = pytest.importorskip("tests.ui.test_bad_input", reason="the page's battery needs gradio_client")
    assert f"| {len(page.CASES)} | `tests/ui/test_bad_input.py`" in DOC
    assert f"{counts['CLI'] + api + edge + len(page.CASES)} bad inputs in all" in DOC
