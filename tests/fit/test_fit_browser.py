"""A real browser drives "Fit to hardware" on the demo model: a budget, Fit, the recipe appears in the editor
with the cost curve, then the recipe runs through the lab's run contract and finishes.

The panel is built alone here (ui.fit.fit_panel beside a recipe editor and a Run button that submits a
RunRequest to the lab's run manager, as the page's Run does), so this test does not depend on where the
page places it.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a fit job and a run: minutes on a shared machine
SMALL_EVAL = {"ppl_tokens": 128, "context": 64, "arithmetic_samples": 8, "max_new_tokens": 8}
TIMEOUT_MS = 600_000  # the machine may be shared


def standalone_app(run_manager, fit_manager):
    import gradio as gr

    from compressor.runs.contract import RunRequest
    from compressor.runs.store import FINAL_STATUSES
    from ui.fit import fit_panel

    with gr.Blocks(analytics_enabled=False) as demo:
        visitor = gr.State(None)
        model = gr.Textbox("demo", label="Model", elem_id="lab-model")
        hardware = gr.Dropdown(["t4", "this-machine"], value="t4", label="Hardware")
        recipe = gr.Code("", language="yaml", label="Recipe", elem_id="lab-recipe")
        fit_panel(fit_manager, model, hardware, recipe, visitor, samples=4)  # a quicker map
        run = gr.Button("Run", elem_id="lab-run")
        status = gr.Markdown(elem_id="lab-status")

        def run_clicked(spec, text, hw):
            try:
                req = RunRequest.from_dict({"model": spec, "recipe": text, "hardware": hw, "eval": SMALL_EVAL})
                rid = run_manager.submit(req.to_dict(), "fit-browser-test")
            except Exception as e:  # the test reads it at once instead of waiting for a run that never started
                yield f"Run not started: {e}"
                return
            while run_manager.status(rid) not in FINAL_STATUSES:
                yield f"Run `{rid}` is {run_manager.status(rid)}."
                run_manager.events(rid, timeout=1.0)
            r = run_manager.get_run(rid)
            yield f"Run `{rid}` {'finished' if r.status == 'succeeded' else r.status}: {r.error or ''}"

        run.click(run_clicked, [model, recipe, hardware], status)
    return demo


@pytest.fixture(scope="module")
def url(tmp_path_factory, monkeypatch_module):
    from compressor.runs.manager import JobManager
    from compressor.runs.runner import TARGET
    from ui.fit import make_fit_manager

    data = tmp_path_factory.mktemp("fit-page")
    monkeypatch_module.setenv("LAB_DATA_DIR", str(data))  # the map cache of the fit job's worker
    run_manager = JobManager(data, target=TARGET, concurrency=1, time_limit_s=900)
    fit_manager = make_fit_manager(data)
    demo = standalone_app(run_manager, fit_manager)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()
        run_manager.shutdown()
        fit_manager.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_fit_to_a_budget_then_run_the_recipe(browser, url, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(url)
    page.get_by_text("Fit to hardware").click()
    bits = page.get_by_label("Average bits per weight", exact=False).and_(page.locator("input[type=number]"))
    bits.fill("3.5")
    bits.press("Enter")
    t0 = time.time()
    page.locator("#lab-fit-run").click()
    expect(page.locator("#lab-fit-status")).to_contain_text("predicted KL", timeout=TIMEOUT_MS)
    print(f"fitted in the browser after {time.time() - t0:.1f} s")
    expect(page.locator("#lab-recipe")).to_contain_text("method: rtn")
    expect(page.locator("#lab-recipe")).to_contain_text("fitted by")
    expect(page.locator("#lab-fit-curve .js-plotly-plot")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(tmp_path / "fit.png"), full_page=True)

    t0 = time.time()
    page.locator("#lab-run").click()
    status = page.locator("#lab-status")
    expect(status).to_contain_text(re.compile("finished|failed|cancelled|interrupted|not started"), timeout=TIMEOUT_MS)
    assert "finished" in status.inner_text(), status.inner_text()
    print(f"the fitted recipe ran in {time.time() - t0:.1f} s")
