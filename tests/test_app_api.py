"""The app through its HTTP API (gradio_client): a preset on the demo model, and bad input.

The app is launched in this process on a free port with its own data folder; the job itself runs in
the job manager's worker process, as in production.
"""

from __future__ import annotations

import pytest

from tests.helpers import free_port

gradio_client = pytest.importorskip("gradio_client")

# The smallest evaluation the page allows: text tokens, context, arithmetic problems, new tokens.
SMALL_EVAL = (128, 64, 8, 8)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import app

    demo, url, managers = app.serve(tmp_path_factory.getbasetemp() / "lab-data", port=free_port(), block=False,
                                    quiet=True)
    try:
        # download_files=False: the report JSON holds local paths (the model's folder) that are data, not files.
        yield gradio_client.Client(url, verbose=False, download_files=False), managers[0]
    finally:
        app.stop(demo, managers)


def test_preset_runs_on_demo_model(lab):
    client, manager = lab
    out = client.predict("demo", "w4-g128", "this-machine", False, *SMALL_EVAL, api_name="/run")
    progress, status, log, cards, samples, *plots, hw, details, report = out
    assert "finished" in status, status
    base, comp = report["baseline"], report["compressed"]
    # Real packing: a 4-bit model's weights are well under half of the fp32 baseline's.
    assert comp["weight_bytes"] < 0.5 * base["weight_bytes"]
    assert comp["kld"] is not None and comp["kld"] >= 0
    assert report["samples"] and "Baseline" in samples and "Compressed" in samples
    assert report["samples"][0]["prompt"] in samples
    assert all(p and p.get("type") == "plotly" for p in plots), plots
    assert "projection" in hw and "Weight memory" in cards
    runs = manager.list_runs()
    assert runs[0]["status"] == "succeeded"


@pytest.mark.parametrize("recipe, expected", [
    ("stages: [method: rtn", "not valid YAML"),
    ("stages:\n- method: rtn\n  bits: 99\n", "bits"),
    ("no-such-preset", "preset name"),
])
def test_bad_recipe_is_a_readable_message(lab, recipe, expected):
    client, _ = lab
    out = client.predict("demo", recipe, "this-machine", False, *SMALL_EVAL, api_name="/run")
    status = out[1]
    assert "Cannot start" in status and expected in status, status
    assert "Traceback" not in status


def test_bad_model_fails_the_job_not_the_app(lab):
    client, _ = lab
    out = client.predict("./no/such/folder", "int8", "this-machine", False, *SMALL_EVAL, api_name="/run")
    status = out[1]
    assert "failed" in status and "Traceback" not in status, status
    # The app still answers.
    assert "offline" in client.predict("demo", api_name="/on_model")
