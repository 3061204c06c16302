"""The Sweep tab's pure parts (ui/sweep.py): recipes from the checklist and the YAML box, and the grid's HTML."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compressor.errors import LabError
from compressor.runs.store import RUNNING, SUCCEEDED, RunRecord
from compressor.runs.sweep import SweepSpec
from compressor.runs.sweep_store import CellRecord
from ui.sweep import YAML_HINT, grid_html, recipe_entries


@pytest.mark.parametrize("presets,yaml_text,labels", [
    (["int8"], YAML_HINT, ["int8"]),  # the commented example is left out
    (["int8"], "- w4-g128\n- {name: mine, method: rtn, bits: 4, group_size: 64}", ["int8", "w4-g128", "mine"]),
    ([], "- int8", ["int8"]),
])
def test_recipes_come_from_the_checklist_then_the_yaml_list(presets, yaml_text, labels):
    spec = SweepSpec.build("demo", recipe_entries(presets, yaml_text))
    assert [r.label for r in spec.recipes] == labels


@pytest.mark.parametrize("presets,yaml_text,says", [
    ([], "", "tick at least one preset"), ([], YAML_HINT, "tick at least one preset"),
    (["int8"], "- int8", "listed twice"), (["int8"], "- {method: nope}", "recipe 1"),
])
def test_a_bad_recipe_choice_says_what_to_change(presets, yaml_text, says):
    with pytest.raises(LabError, match=says):
        SweepSpec.build("demo", recipe_entries(presets, yaml_text))


def _cell(index, label, status, run_id=None, error=None, progress=None):
    run = None if run_id is None else RunRecord(id=run_id, owner="me", status=status, seq=index, payload={},
                                                created_at=0.0, progress=progress, error=error)
    return CellRecord("sw-1", index, "/data/models/tiny", label, "quick", {}, run_id,
                      "submitted" if run_id else status, None, run)


def test_the_grid_escapes_what_was_typed_links_runs_and_shows_progress():
    cells = [_cell(0, "<script>x</script>", "failed", "abc123", error="bad <b>"),
             _cell(1, "w4-g128", RUNNING, "def456", progress={"stage": "compress", "fraction": 0.42}),
             _cell(2, "int8", "waiting")]
    html = grid_html(cells, None)
    assert "<script>" not in html and "&lt;script&gt;" in html and 'title="bad &lt;b&gt;"' in html
    assert html.count('href="?run=') == 2 and "running 42 %" in html
    assert '<td>tiny</td>' in html and "/data/models" not in html  # a folder's name, never its server path
    assert html.count('data-status="waiting"') == 1 and SUCCEEDED not in html


def test_without_ray_the_lab_imports_and_the_ray_tests_skip():
    """A fresh interpreter where `import ray` fails as where it is not installed: the CLI, the sweeps and this
    tab import, and the Ray executor's tests are skipped, not failed (asking for Ray: tests/runs/test_sweep.py)."""
    from compressor.paths import REPO

    code = ("import sys; sys.modules['ray'] = None\n"
            "import pytest, compressor.cli, compressor.runs.sweep_run, compressor.runs.sweep_ray, ui.sweep\n"
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', 'tests/runs/test_sweep_ray.py']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, proc.stdout + proc.stderr  # the module skipped
    assert "1 skipped" in proc.stdout and "could not import 'ray'" in proc.stdout
