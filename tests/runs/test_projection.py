"""A projection is a pure function of a report's footprint: the same numbers the code before the
contract projected, the run's own projection again, and another profile at once, with no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.errors import LabError
from compressor.measure.hardware import ModelFacts
from compressor.runs.contract import Footprint, Report
from compressor.runs.projection import project_report, projection_lines

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEMO_CONFIG = {"n_layers": 6, "hidden_size": 256, "max_context": 512}  # assets/models/lab-llama-7m/config.json


def _with_footprint_from_v1(path: Path) -> tuple[Report, dict]:
    """A schema-1 report (it kept no footprint) with the facts its projection was made from: the bytes
    it stored beside the projection, the demo model's shape, the recipe's traits."""
    old = json.loads(path.read_text())
    report = Report.from_dict(old)
    p = old["projection"]
    traits, bits = report.request.recipe.traits()
    sixteen = p["baseline_dtype"].endswith("(projected)")
    base_bits = 16.0 if sixteen else 32.0

    def facts(side: str) -> ModelFacts:
        return ModelFacts(weight_bytes=p["weight_bytes"][side], n_params=old["model"]["n_params"],
                          kv_bytes_per_token=p["kv_bytes_per_token"][side], **DEMO_CONFIG,
                          traits=traits if side == "compressed" else [],
                          weight_bits=bits if side == "compressed" else base_bits)

    report.footprint = {side: Footprint(measured=facts(side), float16=facts(side), measured_dtype="float32")
                        for side in ("baseline", "compressed")}
    return report, old


@pytest.mark.parametrize("name", ["report_v1_t4_stacked", "report_v1_this_machine"])
def test_the_same_numbers_as_the_projection_before_the_contract(name):
    report, old = _with_footprint_from_v1(FIXTURES / f"{name}.json")
    stored = report.projection  # the schema-1 projection, upgraded
    # the profile as the run had it ("this-machine" was probed then; a probe now would differ)
    new = project_report(report, stored.hardware, report.request.projection_context, report.request.projection_batch)
    assert (new.context, new.batch, new.context_clamped_from) == (stored.context, stored.batch, 2048)
    assert new.float_dtype == old["projection"]["baseline_dtype"]
    for side in ("baseline", "compressed"):
        assert getattr(new, side).to_dict() == getattr(stored, side).to_dict(), side
    if stored.check_against_measured:
        assert new.check_against_measured == stored.check_against_measured
    else:
        assert new.check_against_measured is None
    assert projection_lines(report, new) == old["projection"]["text"]


def test_a_run_reprojects_to_its_own_projection_and_onto_another_profile(demo_run):
    r = demo_run.report
    again = project_report(r, r.request.hardware, r.request.projection_context, r.request.projection_batch)
    assert again.to_dict() == r.projection.to_dict()
    h100 = project_report(r, "h100", 4096, 8)
    assert h100.hardware.id == "h100" and h100.batch == 8
    assert h100.context == 512 and h100.context_clamped_from == 4096  # the demo model's positions
    assert h100.compressed.decode_tokens_per_s > r.projection.compressed.decode_tokens_per_s
    assert h100.compressed.memory_needed_bytes > r.projection.compressed.memory_needed_bytes  # 8 sequences of KV


@pytest.mark.parametrize("context,batch", [(0, 1), (2048, 0), ("2048", 1), (True, 1)])
def test_a_bad_context_or_batch_is_refused(demo_run, context, batch):
    with pytest.raises(LabError, match="must be a positive integer"):
        project_report(demo_run.report, "t4", context, batch)


def test_a_report_without_a_footprint_says_to_run_it_again():
    report = Report.from_dict(json.loads((FIXTURES / "report_v1_t4_stacked.json").read_text()))
    with pytest.raises(LabError, match="run it again"):
        project_report(report, "h100", 2048, 1)
