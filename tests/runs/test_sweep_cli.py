"""`python -m compressor sweep`: bad input refused before anything runs, and a real sweep of two recipes on a
tiny model through this machine's worker pool, its table and JSON (every cell's report)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from compressor import cli
from compressor.cli import sweep as sweep_cli

MINIMAL_EVAL = ("{ppl_tokens: 128, context: 64, top_k: 4, arithmetic_samples: 0, max_new_tokens: 1, "
                "speed_prompt_tokens: 8, speed_new_tokens: 2, repeats: 1, attribute_stages: false}")


@pytest.fixture
def main(monkeypatch):
    """`compressor.cli.main` with the sweep command registered (as the lead wires it)."""
    if sweep_cli not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, sweep_cli))
    return cli.main


@pytest.mark.parametrize("argv,says", [
    (["--recipes", "w4-g128,nope"], "'nope' is not a preset"),
    (["--recipes", "int8", "--eval", "fastest"], "evaluation preset 'fastest' is not known"),
    (["--recipes", "int8", "--model", "no/such-model-here"], "sweep cell no/such-model-here x int8"),
    (["--recipes", "int8", "--workers", "0"], "workers=0 is not valid"),
])
def test_bad_input_exits_2_before_anything_runs(main, tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["sweep", *argv]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "runs.sqlite3").exists()  # nothing recorded


def test_ray_without_ray_installed_says_how_to_install_it(main, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["sweep", "--recipes", "int8", "--ray", "auto"]) == 2
    assert "pip install 'ray" in capsys.readouterr().err


def test_a_sweep_on_this_machine_prints_its_grid_and_writes_every_report(main, tiny_folder, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    threads_before = os.environ.get("OMP_NUM_THREADS")
    code = main(["sweep", "--model", str(tiny_folder), "--recipes", "int8,w4-g128", "--eval", MINIMAL_EVAL,
                 "--hardware", "t4", "--workers", "1", "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "2/2 done, 0 running, 0 queued, 0 failed" in printed and "local (" in printed
    saved = json.loads(out.read_text())
    assert [c["recipe"] for c in saved["cells"]] == ["int8", "w4-g128"]
    assert all(c["status"] == "succeeded" and c["report"]["compressed"]["quality"] for c in saved["cells"])
    assert saved["progress"]["done"] == 2 and saved["sweep"]["status"] == "finished"
    assert os.environ.get("OMP_NUM_THREADS") == threads_before  # the pool's thread setting did not leak
