"""The app through its HTTP API (gradio_client): a stacked recipe on the demo model, the prompt box, the
list of public endpoints, sharing, and readable answers to bad input.

The app is the session's `served` one (tests/ui/conftest.py): jobs run in the job manager's worker
process, as in production, and a client is a visitor of its own.
"""

from __future__ import annotations

import json

import pytest

from compressor.runs.contract import Report
from tests.ui.pages import client, owner_of_client, run_args

gradio_client = pytest.importorskip("gradio_client")

# Two stages, so the report attributes the change to each; the KV stage keeps its default residual
# window, which holds a whole arithmetic problem (the page says so).
TWO_STAGES = "stages:\n- {method: rtn, bits: 4, group_size: 128}\n- {method: kivi, bits: 2}\n"
# What a script may call; every other listener is UI-only and hidden.
PUBLIC_ENDPOINTS = {"/run", "/cancel", "/ask", "/show_run", "/check_recipe", "/history", "/export_csv",
                    "/export_json", "/download_model", "/compare", "/share"}


@pytest.fixture(scope="module")
def lab(served):
    return client(served.url), served.manager, served.ask_manager


@pytest.fixture(scope="module")
def finished(lab):
    """The outputs of /run for one finished run of TWO_STAGES (one run shared by the tests that need it)."""
    c, manager, _ = lab
    out = c.predict(*run_args(TWO_STAGES, "this-machine"), api_name="/run")
    assert "finished" in out[1], out[1]
    run_id = manager.list_runs(owner=owner_of_client(c), limit=1)[0].id
    return run_id, out


def test_stacked_recipe_runs_on_demo_model(lab, finished):
    c, manager, _ = lab
    run_id, out = finished
    progress, status, log, link, cards, samples, *plots, hw, details, raw = out
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
    assert all("(MiB" in a["text"] for a in memory["annotations"])
    assert link == f"?run={run_id}"
    table = c.predict("KL to baseline (lower better)", "Weight memory", "t4", api_name="/history")[0]
    assert "weights MiB" in table["headers"] and run_id in [row[table["headers"].index("id")] for row in table["data"]]


def test_the_page_says_when_the_kv_window_holds_every_arithmetic_problem(finished):
    cards = finished[1][4]
    # The default residual window holds every arithmetic problem: the page says so and names the fix.
    assert "lab-kv-note" in cards and "residual: 0" in cards


def test_prompt_box_answers_with_both_models(lab, finished):
    c, _, ask_manager = lab
    run_id, _ = finished
    c.predict(run_id, False, api_name="/show_run")  # picks the run for this session's prompt box
    baseline, compressed = c.predict("27+58=", api_name="/ask")
    assert isinstance(baseline, str) and baseline.strip() and isinstance(compressed, str) and compressed.strip()
    # Both answers came from the prompt-box worker, with the demo model and the run's saved compressed model.
    job = ask_manager.list_runs(limit=1)[0]
    assert job.status == "succeeded" and job.model_spec == "demo"
    assert job.report["source"] == "artifact"
    assert (job.report["baseline"], job.report["compressed"]) == (baseline, compressed)

    with pytest.raises(gradio_client.exceptions.AppError, match="prompt is empty") as empty:
        c.predict("  ", api_name="/ask")
    assert "Traceback" not in str(empty.value)
    fresh = client(c.src)  # a new session: no run yet
    with pytest.raises(gradio_client.exceptions.AppError, match="run a comparison first"):
        fresh.predict("27+58=", api_name="/ask")


def test_api_shows_only_the_public_endpoints(lab):
    c = lab[0]
    api = c.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == PUBLIC_ENDPOINTS, sorted(api["named_endpoints"])
    assert not api["unnamed_endpoints"]
    assert "Recipe is valid for **demo**" in c.predict("int8", "demo", api_name="/check_recipe")
    with pytest.raises(ValueError):  # a UI-only listener is refused to a client, not just undocumented
        c.predict("demo", api_name="/on_model")


def test_a_shared_run_opens_for_another_visitor_and_an_unshared_one_does_not(lab, finished):
    c, manager, _ = lab
    run_id, _ = finished
    other = client(c.src)
    with pytest.raises(gradio_client.exceptions.AppError, match="yours or shared"):
        other.predict(run_id, False, api_name="/show_run")
    with pytest.raises(gradio_client.exceptions.AppError, match="no run is on show"):
        other.predict(True, api_name="/share")
    c.predict(run_id, False, api_name="/show_run")
    c.predict(True, api_name="/share")
    assert manager.get_run(run_id).shared
    out = other.predict(run_id, False, api_name="/show_run")
    assert "Showing run" in out[1] and "Weight memory" in out[4]
    with pytest.raises(gradio_client.exceptions.AppError, match="only share your own"):
        other.predict(False, api_name="/share")  # on show for them, but not theirs to unshare
    gallery = other.predict("KL to baseline (lower better)", "Weight memory", "t4", api_name="/history")[3]
    assert run_id in [row[gallery["headers"].index("id")] for row in gallery["data"]]
    c.predict(False, api_name="/share")
    assert not manager.get_run(run_id).shared


def test_bad_model_fails_the_job_not_the_app(lab):
    c = lab[0]
    out = c.predict(*run_args("int8", "this-machine", model="./no/such/folder"), api_name="/run")
    status = out[1]
    assert ("failed" in status or "Cannot start" in status) and "Traceback" not in status, status
    assert "/no/such" not in status.replace("./no/such", "")  # no server path beyond what was typed
    assert "Recipe is valid" in c.predict("int8", "demo", api_name="/check_recipe")  # the app still answers


def test_adding_a_stage_to_a_preset_name_extends_the_preset():
    import yaml

    from ui.recipes import with_stage

    stages = yaml.safe_load(with_stage("int8", {"method": "kivi", "bits": 2}))["stages"]
    assert [s["method"] for s in stages] == ["rtn", "kivi"] and stages[0]["bits"] == 8
