"""The runner's job target on the session's demo run: a complete report, stored once per fact, written
beside the saved compressed model, which the prompt box (compressor.runs.ask) then answers with."""

from __future__ import annotations

import json

from compressor.measure.arithmetic import arithmetic_max_new_tokens
from compressor.measure.evaldata import load_arithmetic
from compressor.models.loading import load_model
from compressor.runs.contract import Report


def test_the_report_is_complete_and_keeps_each_fact_once(demo_run):
    r = demo_run.report
    for m in (r.baseline, r.compressed):
        assert m.quality.n_tokens == 512 and m.quality.stride == r.request.eval.stride
        assert m.arithmetic.n == 24 and len(m.arithmetic.correct) == 24
        assert set(m.speed.by_batch) == {"1", str(r.request.eval.speed_batch)} and m.speed.memory_method
    _, tokenizer = load_model("demo")
    problems = load_arithmetic()[: r.request.eval.arithmetic_samples]
    longest = max(len(tokenizer(p["prompt"])["input_ids"]) for p in problems)
    assert r.baseline.arithmetic.max_tokens == r.compressed.arithmetic.max_tokens \
        == longest + arithmetic_max_new_tokens(tokenizer, problems)
    assert r.baseline.kld is None and r.compressed.quality.reference_top_k == r.request.eval.top_k
    assert r.compressed.arithmetic_diff_ci95 is not None
    expected = {s.prompt: s.expected for s in r.samples}  # the arithmetic prompts carry their answers (marks)
    assert expected.pop("27+58=") == "85" and "83" in expected.values()
    assert list(expected.values()).count(None) == len(expected) - 1
    assert set(r.footprint) == {"baseline", "compressed"} and r.footprint["compressed"].measured_dtype == "float32"
    assert r.model.fingerprint["identified"] and r.environment.device == "cpu"
    assert r.model.fingerprint["folder"] == "lab-llama-7m"  # what identifies the weights, not the server's path
    assert "/" not in json.dumps(r.model.fingerprint) and r.pending == [] and r.request.eval.preset == "custom"
    assert r.timings.total_s >= r.timings.compress_s > 0 and not r.timings.baseline_cached
    d = r.to_dict()
    assert "stages" not in d and "layers" not in d and "samples" not in d["baseline"]


def test_run_job_writes_its_report_beside_the_saved_model(demo_run):
    stored = json.loads((demo_run.artifact_dir / "report.json").read_text())
    assert stored == json.loads(json.dumps(demo_run.report.to_dict()))
    assert Report.from_dict(stored).compressed.kld == demo_run.report.compressed.kld
    assert (demo_run.artifact_dir / "config.json").is_file()  # the compressed model, loadable


def test_the_prompt_box_answers_with_the_runs_saved_model(demo_run):
    from compressor.runs.ask import answer

    out = answer({"model": "demo", "recipe": demo_run.report.request.recipe.to_dict(),
                  "artifact": str(demo_run.artifact_dir), "prompt": "27+58=", "max_new_tokens": 4})
    assert out["source"] == "artifact"
    assert isinstance(out["baseline"], str) and isinstance(out["compressed"], str)


def test_the_target_string_a_job_manager_runs_names_run_job():
    import importlib

    from compressor.runs.runner import TARGET, run_job

    module, name = TARGET.split(":")
    assert getattr(importlib.import_module(module), name) is run_job
