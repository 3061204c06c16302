"""A real browser (Debian's Chromium) drives the Sweep tab (ui/sweep.py) served alone in a small Blocks over a
job manager like the page's (real runner in worker processes, one cell at a time): a sweep of three recipes on
the demo model (two ticked presets and a third written in the YAML box) fills the grid and the Pareto plot
as cells land.

The panel is served on its own (ui/page.py assembles the tabs; this test needs only the sweep's). The data
folder is the session's demo run's, and the evaluation settings are its own, so every cell reads that run's
baseline from the cache (the sweep's sharing shown across sweeps as well).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.ui.pages import DEMO_EVAL

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 450_000  # the machine may be shared
EVAL_YAML = "{" + ", ".join(f"{k}: {v}" for k, v in DEMO_EVAL.items() if k != "context") + "}"
YAML_RECIPE = "- w3-g128"


@pytest.fixture
def sweep_page(demo_run):
    import gradio as gr

    from compressor.runs.manager import JobManager
    from compressor.runs.runner import TARGET, check_payload
    from compressor.runs.sweep_run import Sweeps
    from ui.page import launch_kwargs
    from ui.sweep import sweep_panel

    manager = JobManager(demo_run.data_dir, target=TARGET, concurrency=1, check_payload=check_payload)
    sweeps = Sweeps(manager)
    with gr.Blocks(analytics_enabled=False) as demo:
        visitor = gr.State(None)  # no browser id here: the owner is the page's session (ui.visitors.owner_of)
        sweep_panel(sweeps, visitor)
    demo.queue()
    _, url, _ = demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield url, sweeps
    finally:
        demo.close()
        sweeps.shutdown()
        manager.shutdown()


_POINTS_JS = """(trace) => { const el = document.querySelector('#lab-sweep-pareto .js-plotly-plot');
    return el && el.data && el.data[trace] ? el.data[trace].x.length : 0; }"""


def _points(page, trace: int) -> int:
    """How many points the Pareto plot's `trace` holds (0: the cells, 1: the front)."""
    return page.evaluate(_POINTS_JS, trace)


def test_a_sweep_of_three_presets_fills_the_grid_and_the_pareto_front(browser, sweep_page, tmp_path):
    from playwright.sync_api import expect

    url, sweeps = sweep_page
    page = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
    page.goto(url)
    box = page.locator("#lab-sweep-eval textarea")
    box.fill(EVAL_YAML)
    presets = page.locator("#lab-sweep-presets")
    presets.get_by_label("hqq-w4-g64", exact=True).uncheck()
    page.locator("#lab-sweep-yaml .cm-content").click()
    page.keyboard.press("Control+A")  # over the commented example
    page.keyboard.insert_text(YAML_RECIPE)
    page.locator("#lab-sweep-hardware input").click()
    page.get_by_role("option", name="NVIDIA T4", exact=False).first.click()
    t0 = time.time()
    page.locator("#lab-sweep-start").click()

    status, grid = page.locator("#lab-sweep-status"), page.locator("#lab-sweep-grid")
    expect(grid.locator("tbody tr")).to_have_count(3, timeout=60_000)
    # the first cell lands while the others still wait: grid and front show it at once
    expect(status).to_contain_text("1/3 done", timeout=RUN_TIMEOUT_MS)
    assert grid.locator('tr[data-status="succeeded"]').count() >= 1  # the next cell may land meanwhile
    page.wait_for_function(f"() => ({_POINTS_JS})(0) >= 1", timeout=30_000)
    expect(status).to_contain_text("3/3 done, 0 running, 0 queued, 0 failed", timeout=RUN_TIMEOUT_MS)
    print(f"sweep of 3 finished in the browser after {time.time() - t0:.1f} s")
    page.wait_for_function(f"() => ({_POINTS_JS})(0) === 3", timeout=30_000)  # the last redraw's plot

    rows = grid.locator("tbody tr")
    assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(3)] == ["int8", "w4-g128", "w3-g128"]
    assert grid.locator('tr[data-status="succeeded"]').count() == 3
    links = grid.locator("a[href^='?run=']")
    assert links.count() == 3  # each cell opens as a run on the page
    assert _points(page, 0) == 3 and 1 <= _points(page, 1) <= 3
    expect(page.locator("#lab-sweep-pareto")).to_contain_text("NVIDIA T4")  # projected onto the chosen profile

    # every cell is an ordinary run with a report; all read the demo run's baseline from the cache
    sweep = sweeps.store.list(limit=1)[0]
    assert sweep.id in status.inner_text() and sweep.status == "finished"
    cells = sweeps.cells(sweep.id)
    reports = [c.run.load_report() for c in cells]
    assert [r.request.hardware for r in reports] == ["t4"] * 3
    assert all(r.timings.baseline_cached for r in reports)
    assert links.first.get_attribute("href") == f"?run={cells[0].run_id}"

    page.screenshot(path=str(tmp_path / "sweep-desktop.png"), full_page=True)
    if os.environ.get("LAB_SCREENSHOTS"):
        out = Path(os.environ["LAB_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "sweep-desktop.png"), full_page=True)
    page.context.close()
