"""The app through its HTTP API (gradio_client): a stacked recipe on the demo model, the prompt box,
the list of public endpoints, and bad input.

The app is launched in this process on a free port with its own data folder; the job itself runs in
the job manager's worker process, as in production.
"""

from __future__ import annotations

import json

import pytest

from compressor.runs.contract import Report
from tests.helpers import free_port
from ui.request import EVAL_FIELDS

gradio_client = pytest.importorskip("gradio_client")

# The smallest evaluation the page allows: text tokens, context, arithmetic problems, new tokens.
SMALL_EVAL = (128, 64, 8, 8)
# Two stages, so the report attributes the change to each; the KV stage keeps its default residual
# window, which holds a whole arithmetic problem (the page says so).
TWO_STAGES = "stages:\n- {method: rtn, bits: 4, group_size: 128}\n- {method: kivi, bits: 2}\n"
# What a script may call; every other listener is UI-only and hidden.
PUBLIC_ENDPOINTS = {"/run", "/cancel", "/ask", "/show_run", "/check_recipe", "/history", "/export_csv",
                    "/export_json", "/download_model"}


@pytest.fixture(scope="module")
def lab(demo_run):
    import app

    # the session's demo run's data folder: its baseline is in the cache for the same settings
    demo, url, managers = app.serve(demo_run.data_dir, port=free_port(), block=False, quiet=True)
    try:
        # download_files=False: the report JSON holds local paths (the model's folder) that are data, not files.
        yield gradio_client.Client(url, verbose=False, download_files=False), *managers
    finally:
        app.stop(demo, managers)


@pytest.fixture(scope="module")
def finished(lab):
    """The outputs of /run for one finished run of TWO_STAGES (one run shared by the tests that need it)."""
    client, manager, _ = lab
    out = client.predict("demo", TWO_STAGES, "this-machine", False, *SMALL_EVAL, api_name="/run")
    assert "finished" in out[1], out[1]
    run_id = next(r.id for r in manager.list_runs() if r.status == "succeeded")
    return run_id, out


def test_stacked_recipe_runs_on_demo_model(lab, finished):
    client, manager, _ = lab
    run_id, out = finished
    progress, status, log, cards, samples, *plots, hw, details, raw = out
    assert "finished" in status, status
    report = Report.from_dict(raw)  # the raw report box holds the report in the current schema
    base, comp = report.baseline, report.compressed
    # Real packing: a 4-bit model's weights are well under half of the fp32 baseline's.
    assert comp.weight_bytes < 0.5 * base.weight_bytes
    assert comp.kld is not None and comp.kld >= 0
    assert report.samples and "Baseline" in samples and "Compressed" in samples
    assert report.samples[0].prompt in samples
    assert all(p and p.get("type") == "plotly" for p in plots), plots
    assert "projection" in hw and "Weight memory" in cards
    assert manager.get_run(run_id).status == "succeeded"
    # Each stage's share of the change, under the cards: the baseline row, then both stages.
    assert 'id="lab-attribution"' in cards and len(report.attribution) == 2
    assert "<td>baseline</td>" in cards and "0: rtn" in cards and "1: kivi" in cards
    # Memory is divided by 2**20, so it is labelled MiB, in the plot and in the history table.
    memory = json.loads(plots[0]["plot"])["layout"]
    assert memory["title"]["text"] == "Memory (MiB)"
    assert {memory[k]["title"]["text"] for k in ("yaxis", "yaxis2")} == {"MiB"}
    table = client.predict([], "KL to baseline (lower better)", "Weight memory", api_name="/history")[0]
    assert "weights MiB" in table["headers"] and run_id in [row[0] for row in table["data"]]


def test_the_page_says_when_the_kv_window_holds_every_arithmetic_problem(finished):
    cards = finished[1][3]
    # The default residual window holds every arithmetic problem: the page says so and names the fix.
    assert "lab-kv-note" in cards and "residual: 0" in cards


def test_a_preset_on_the_page_asks_and_measures_what_the_runner_does(lab, demo_run):
    """The page and the job target, given the same settings, make the same RunRequest and the same quality
    figures (the CLI builds the same request: tests/ui/test_request.py)."""
    client = lab[0]
    want = demo_run.report
    sliders = [getattr(want.request.eval, name) for name in EVAL_FIELDS]
    out = client.predict("demo", "w4-g128", want.request.hardware, False, *sliders, api_name="/run")
    assert "finished" in out[1], out[1]
    got = Report.from_dict(out[-1])
    assert got.request == want.request
    for side in ("baseline", "compressed"):
        g, w = getattr(got, side), getattr(want, side)
        assert g.weight_bytes == w.weight_bytes
        assert g.perplexity == pytest.approx(w.perplexity, rel=1e-4)
        assert g.arithmetic.correct == w.arithmetic.correct
    assert got.compressed.kld == pytest.approx(want.compressed.kld, rel=1e-3, abs=1e-6)
    assert got.compressed.top1_agreement == pytest.approx(want.compressed.top1_agreement, abs=1e-3)
    assert [s.compressed for s in got.samples] == [s.compressed for s in want.samples]


def test_prompt_box_answers_with_both_models(lab, finished):
    client, _, ask_manager = lab
    run_id, _ = finished
    client.predict(run_id, False, api_name="/show_run")  # picks the run for this session's prompt box
    baseline, compressed = client.predict("27+58=", api_name="/ask")
    assert isinstance(baseline, str) and baseline.strip() and isinstance(compressed, str) and compressed.strip()
    # Both answers came from the prompt-box worker, with the demo model and the run's saved compressed model.
    job = ask_manager.list_runs(limit=1)[0]
    assert job.status == "succeeded" and job.model_spec == "demo"
    assert job.report["source"] == "artifact"
    assert (job.report["baseline"], job.report["compressed"]) == (baseline, compressed)

    with pytest.raises(gradio_client.exceptions.AppError, match="prompt is empty") as empty:
        client.predict("  ", api_name="/ask")
    assert "Traceback" not in str(empty.value)
    fresh = gradio_client.Client(client.src, verbose=False, download_files=False)  # a new session: no run yet
    with pytest.raises(gradio_client.exceptions.AppError, match="Run a comparison first"):
        fresh.predict("27+58=", api_name="/ask")


def test_api_shows_only_the_public_endpoints(lab):
    client = lab[0]
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == PUBLIC_ENDPOINTS, sorted(api["named_endpoints"])
    assert not api["unnamed_endpoints"]
    assert "Recipe is valid" in client.predict("int8", api_name="/check_recipe")
    with pytest.raises(ValueError):  # a UI-only listener is refused to a client, not just undocumented
        client.predict("demo", api_name="/on_model")


@pytest.mark.parametrize("recipe, expected", [
    ("stages: [method: rtn", "not valid YAML"),
    ("stages:\n- method: rtn\n  bits: 99\n", "bits"),
    ("no-such-preset", "preset name"),
])
def test_bad_recipe_is_a_readable_message(lab, recipe, expected):
    client = lab[0]
    out = client.predict("demo", recipe, "this-machine", False, *SMALL_EVAL, api_name="/run")
    status = out[1]
    assert "Cannot start" in status and expected in status, status
    assert "Traceback" not in status


def test_bad_model_fails_the_job_not_the_app(lab):
    client = lab[0]
    out = client.predict("./no/such/folder", "int8", "this-machine", False, *SMALL_EVAL, api_name="/run")
    status = out[1]
    assert "failed" in status and "Traceback" not in status, status
    # The app still answers.
    assert "Recipe is valid" in client.predict("int8", api_name="/check_recipe")


def test_adding_a_stage_to_a_preset_name_extends_the_preset():
    import yaml

    from ui.recipes import with_stage

    stages = yaml.safe_load(with_stage("int8", {"method": "kivi", "bits": 2}))["stages"]
    assert [s["method"] for s in stages] == ["rtn", "kivi"] and stages[0]["bits"] == 8
