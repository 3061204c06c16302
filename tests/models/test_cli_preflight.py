"""`python -m compressor run --model <SmolLM2-135M> --recipe P`, the CLI path itself (the one
benchmarks/smollm2_presets.py drives through `runner.run`), on SmolLM2's config alone: every preset gets
past the preflight to the weight load, and a recipe that cannot fit is refused before it, naming the
layer and the fix. The weights file is empty, so nothing here can pass by loading the real model."""

from __future__ import annotations

import json

import pytest

from compressor.cli import main
from compressor.engine.presets import list_presets
from compressor.errors import LabError
from tests.models.test_preflight import SMOLLM2


class Loaded(LabError):
    """Raised in place of the weight load: the run got past every check made before it."""


@pytest.fixture
def smollm2_config(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "smollm2-config"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(SMOLLM2))
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    loads = []

    def load_model(spec, **kw):
        loads.append(spec)
        raise Loaded("preflight passed; weights would load now")
    monkeypatch.setattr("compressor.models.loading.load_model", load_model)
    return str(folder), loads


@pytest.mark.parametrize("preset", list(list_presets()))
def test_every_preset_passes_the_cli_preflight_on_smollm2(smollm2_config, capsys, tmp_path, preset):
    folder, loads = smollm2_config
    code = main(["run", "--model", folder, "--recipe", preset, "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "preflight passed" in err and loads == [folder], err
    assert ("group_size=128 does not divide in_features 576 of 180 layer(s)" in err) == ("g128" in preset), err


def test_a_recipe_that_cannot_fit_smollm2_is_refused_before_the_weights_naming_the_layer_and_the_fix(
        smollm2_config, capsys):
    folder, loads = smollm2_config
    code = main(["run", "--model", folder, "--quiet", "--recipe",
                 '{"method": "gptq", "bits": 4, "group_size": 128, "group_fallback": false}'])
    err = capsys.readouterr().err
    assert code == 2 and loads == [], err
    assert "in_features 576 of model.layers.0.self_attn.q_proj: try 64, 32" in err
    assert "group_fallback: true" in err and "Traceback" not in err
