"""`python -m compressor fit`: a tiny model folder fitted to a budget writes a recipe that loads, and a bad
budget is refused before the model loads."""

from __future__ import annotations

import argparse

import pytest

from compressor.cli import fit as fit_cli
from compressor.engine.recipe import load_recipe
from compressor.errors import LabError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    fit_cli.add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["fit", *argv])


# calibration text of its own: the built-in text takes seconds to read from the standard library
TEXT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


def test_fit_writes_a_recipe_that_loads(tiny_folder, tmp_path, capsys):
    out = tmp_path / "fitted.yaml"
    args = parse(["--model", str(tiny_folder), "--budget", "3.5bits", "--samples", "2", "--seq-len", "32",
                  "--calibration", TEXT, "--out", str(out), "--json", str(tmp_path / "fit.json")])
    assert args.func(args) == 0
    recipe = load_recipe(out)
    assert recipe.stages[0].method == "rtn"
    printed = capsys.readouterr().out
    assert "sensitivity map of" in printed and "predicted KL" in printed and "uniform RTN" in printed
    assert out.read_text().startswith("# fitted by `python -m compressor fit` to 3.5 bits per weight")
    # the second fit reads the map from the cache
    args = parse(["--model", str(tiny_folder), "--budget", "5bits", "--samples", "2", "--seq-len", "32",
                  "--calibration", TEXT])
    assert args.func(args) == 0
    assert "read from the cache" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [(["--budget", "lots"], "not understood"),
                                        (["--budget", "hardware:tpu9"], "not a known profile"),
                                        (["--budget", "4bits", "--samples", "0"], "--samples=0"),
                                        (["--budget", "4bits", "--out", "r.json"], "give a .yaml"),
                                        (["--budget", "4bits", "--exclude", "w4pc,fp"], "may stay float")])
def test_bad_input_is_refused_before_the_model_loads(argv, match, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("loaded the model")

    monkeypatch.setattr("compressor.models.loading.load_model", no_load)
    args = parse(["--model", "demo", *argv])
    with pytest.raises(LabError, match=match):
        args.func(args)
