"""The run contract: requests and reports survive JSON, and reports stored by older code still open."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.runs.contract import Report, RunRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = sorted(FIXTURES.glob("report_v1_*.json"))  # written by the code before the contract (schema 1)


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_a_schema_1_report_upgrades_and_keeps_its_figures(path):
    old = json.loads(path.read_text())
    r = Report.from_dict(old)
    assert r.schema_version == 2
    for side in ("baseline", "compressed"):
        o, new = old[side], getattr(r, side)
        assert new.weight_bytes == o["weight_bytes"]
        assert new.perplexity == o["perplexity"]
        assert new.arithmetic_accuracy == o["arithmetic_accuracy"]
        assert new.decode_tokens_per_s == o["decode_tokens_per_s"]
        assert new.prefill_tokens_per_s == o["prefill_tokens_per_s"]
        assert new.kv_bytes_per_token == o["kv_bytes_per_token"]
        assert new.kernel_paths == o["kernel_paths"]
    assert r.compressed.kld == old["compressed"]["kld"]
    assert r.compressed.top1_agreement == old["compressed"]["top1_agreement"]
    # fields added to the stage configs since (with their defaults) join the old recipe's own
    for stage, old_stage in zip(r.request.recipe.to_dict()["stages"], old["recipe"]["stages"], strict=True):
        assert stage.items() >= old_stage.items()
    assert r.request.hardware == old["hardware"]
    assert r.request.eval.values() == old["settings"]  # and a preset label, derived from them
    assert [s.method for s in r.compression.stages] == [s["method"] for s in old["stages"]]
    assert len(r.compression.layers) == len(old["layers"])
    assert [(s.prompt, s.baseline, s.compressed) for s in r.samples] == \
        [(s["prompt"], s["baseline"], s["compressed"]) for s in old["samples"]]
    p, op = r.projection, old["projection"]
    assert p.hardware.id == op["hardware"]["id"]
    assert p.compressed.fits == op["compressed"]["fits"]
    assert p.compressed.decode_tokens_per_s == op["compressed"]["decode_tokens_per_s"]
    keys = ("perplexity", "kld", "top1_agreement", "arithmetic_accuracy")
    assert [(a.method, a.delta) for a in r.attribution] == \
        [(a["method"], {k: a[f"delta_{k}"] for k in keys}) for a in old["attribution"]]


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_a_report_round_trips_through_json_unchanged(path):
    d = Report.from_dict(json.loads(path.read_text())).to_dict()
    assert Report.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert "stages" not in d and "layers" not in d  # stored once, inside "compression"


def test_a_request_reads_old_payload_names_and_refuses_unknown_keys():
    r = RunRequest.from_dict({"model": "demo", "recipe": "w4-g128", "samples": 8, "context": 64})
    assert (r.eval.arithmetic_samples, r.eval.context) == (8, 64)
    assert RunRequest.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(LabError, match="unknown request key"):
        RunRequest.from_dict({"model": "demo", "recipe": "int8", "colour": "red"})
    with pytest.raises(LabError, match="JSON boolean"):
        RunRequest.from_dict({"model": "demo", "recipe": "int8", "trust_remote_code": "false"})


def test_a_report_from_a_newer_schema_is_refused_with_the_fix():
    with pytest.raises(LabError, match="update the lab"):
        Report.from_dict({"schema_version": 99})
