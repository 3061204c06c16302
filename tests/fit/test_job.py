"""The page's fit job (compressor.fit.job:fit_job): a tiny model's map and fitted recipe come back as plain
dicts; a budget below the smallest model still returns the map with the reason; bad payloads are refused
before the model loads."""

from __future__ import annotations

import pytest

from compressor.engine.recipe import Recipe
from compressor.errors import LabError
from compressor.fit.fitting import FitResult
from compressor.fit.job import fit_job
from compressor.fit.sensitivity import SensitivityMap

TEXT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


class Ctx:
    def __init__(self):
        self.events, self.lines = [], []

    def progress(self, event: dict) -> None:
        self.events.append(event)

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_fit_job_returns_the_map_and_a_recipe_that_parses(tiny_folder, monkeypatch):
    # calibration text of its own: the built-in text takes seconds to gather from the standard library
    monkeypatch.setattr("compressor.engine.calibration.builtin_text", lambda *a, **k: TEXT)
    ctx = Ctx()
    out = fit_job({"model": str(tiny_folder), "budget": "3.5bits", "samples": 2, "seq_len": 32}, ctx)
    assert out["error"] is None
    smap = SensitivityMap.from_dict(out["map"])
    result = FitResult.from_dict(out["result"])
    assert len(smap.modules) == 2 * 7 + 1  # two layers of seven linears, and the head
    assert result.allocation.bytes <= result.budget_bytes
    Recipe.from_dict(result.recipe)
    fractions = [e["fraction"] for e in ctx.events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    # the same model again reads the map from the cache, and a budget nothing fits comes back as a reason
    again = fit_job({"model": str(tiny_folder), "budget": "1KiB", "samples": 2, "seq_len": 32}, Ctx())
    assert again["result"] is None and "below the smallest" in again["error"]
    assert again["map"]["key"] == out["map"]["key"]


@pytest.mark.parametrize("payload,match", [({"budget": "lots"}, "not understood"),
                                           ({"budget": "4bits", "samples": 0}, "samples=0"),
                                           ({"budget": "4bits", "seq_len": 10**6}, "seq_len=1000000"),
                                           ({"budget": "4bits", "context": True}, "context=True")])
def test_bad_payloads_are_refused_before_the_model_loads(payload, match, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("loaded the model")

    monkeypatch.setattr("compressor.models.loading.load_model", no_load)
    with pytest.raises(LabError, match=match):
        fit_job({"model": "demo", **payload})
