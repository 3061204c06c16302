"""A real browser (Debian's Chromium, headless) drives the page: pick a preset, run it on the demo
model, wait for the result, check both generations and the plots, save a screenshot.

LAB_SCREENSHOT=docs/screenshot.png also writes the README's screenshot of the finished comparison.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PRESET = "int8"
# Same small evaluation as tests/ui/test_app_api.py, so a shared data folder reuses the baseline.
SMALL_EVAL = {"Text tokens scored": 128, "Context length": 64, "Arithmetic problems": 8,
              "New tokens per sample answer": 8}
RUN_TIMEOUT_MS = 450_000  # generous: the CI machine may be shared


@pytest.fixture(scope="module")
def url(demo_run):
    import app

    # the session's demo run's data folder, as tests/ui/test_app_api.py uses: baselines are cached there
    demo, url, managers = app.serve(demo_run.data_dir, port=free_port(), block=False, quiet=True)
    try:
        yield url
    finally:
        app.stop(demo, managers)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_preset_run_in_browser(browser, url, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url.rstrip("/")) and
            not r.url.startswith(("data:", "blob:")) else None)
    page.goto(url)

    page.locator("#lab-preset input").click()
    page.get_by_role("option", name=f"{PRESET}:", exact=False).first.click()
    expect(page.locator("#lab-recipe")).to_contain_text("bits: 8", timeout=60_000)

    page.get_by_text("Evaluation settings").click()
    for label, value in SMALL_EVAL.items():
        box = page.get_by_label(label, exact=False).and_(page.locator("input[type=number]"))
        box.fill(str(value))
        box.press("Enter")

    t0 = time.time()
    page.locator("#lab-run").click()
    expect(page.locator("#lab-status")).to_contain_text("finished", timeout=RUN_TIMEOUT_MS)
    print(f"run finished in the browser after {time.time() - t0:.1f} s")

    samples = page.locator("#lab-samples .lab-sample")
    expect(samples.first).to_be_visible()
    assert samples.count() >= 2
    first = samples.first
    assert first.locator(".lab-gen").count() == 2  # baseline and compressed side by side
    expect(first).to_contain_text("Baseline")
    expect(first).to_contain_text("Compressed")
    expect(page.locator("#lab-cards")).to_contain_text("Weight memory")
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "comparison.png"), full_page=True)
    if os.environ.get("LAB_SCREENSHOT"):
        page.screenshot(path=os.environ["LAB_SCREENSHOT"], full_page=True)

    page.get_by_role("tab", name="Plots").click()
    plots = page.locator(".js-plotly-plot")
    expect(plots.nth(3)).to_be_visible(timeout=60_000)
    assert plots.count() >= 4
    page.screenshot(path=str(tmp_path / "plots.png"), full_page=True)

    page.get_by_role("tab", name="Hardware (projection)").click()
    expect(page.locator("#lab-hardware-panel")).to_contain_text("not a measurement")
    expect(page.locator("#lab-hardware-panel .lab-fit").first).to_be_visible()
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#lab-history")).to_contain_text("succeeded", timeout=30_000)
    page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
    assert not outside, f"the page made requests outside the app: {outside[:5]}"


def test_narrow_screen_stacks_columns(browser, url):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(url)
    run = page.locator("#lab-run").bounding_box()
    assert run is not None and run["x"] + run["width"] <= 390 + 1  # nothing pushed off screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 392
