"""A real browser (Debian's Chromium, headless) drives the deployed page (real runs in worker processes):
one run on the demo model, its cards, samples and plots; a new hardware profile projects it again with no
new run; a second run, and the two side by side; each screen at desktop and at phone width.

The screenshots go to the test's folder; with LAB_SCREENSHOTS=docs/screenshots they are also written there
for the README (look at each: tests/ui/test_browser.py::SHOTS names them).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.ui.pages import open_tab, set_demo_settings

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 450_000  # generous: the machine may be shared
DESKTOP, PHONE = {"width": 1400, "height": 1000}, {"width": 390, "height": 844}
TWO_STAGES = "stages:\n- {method: rtn, bits: 4, group_size: 128}\n- {method: kivi, bits: 2}\n"


def _shoot(page, name: str, folder: Path) -> None:
    page.wait_for_timeout(700)  # plots finish their transitions
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LAB_SCREENSHOTS"):  # for the docs: the same picture in 256 colours, a third of the bytes
        from PIL import Image

        out = Path(os.environ["LAB_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(256).save(out / f"{name}.png", optimize=True)


def _run(page, recipe: str | None = None, preset: str | None = None) -> str:
    """Runs what the settings say (after loading `preset` or typing `recipe`); the finished run's id."""
    from playwright.sync_api import expect

    before = page.url.split("run=")[1][:12] if "run=" in page.url else None
    if preset:
        page.locator("#lab-preset input").click()
        page.get_by_role("option", name=f"{preset}:", exact=False).first.click()
    if recipe:
        page.get_by_role("tab", name="YAML").click()
        editor = page.locator("#lab-recipe .cm-content")
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(recipe)
    t0 = time.time()
    page.locator("#lab-run").click()
    expect(page).not_to_have_url(re.compile(f"run={before}") if before else re.compile(r"^$"), timeout=60_000)
    expect(page).to_have_url(re.compile(r"run=\w{12}"), timeout=60_000)
    rid = page.url.split("run=")[1][:12]
    expect(page.locator("#lab-status")).to_contain_text(f"Run {rid} finished", timeout=RUN_TIMEOUT_MS)
    print(f"run {rid} finished in the browser after {time.time() - t0:.1f} s")
    return rid


def _no_overflow(page) -> None:
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 2  # nothing off the right edge


def test_a_run_its_reprojection_and_a_comparison_in_the_browser(browser, served, demo_run, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(served.url.rstrip("/")) and
            not r.url.startswith(("data:", "blob:")) else None)
    page.goto(served.url)
    set_demo_settings(page)
    page.locator("#lab-hardware input").click()
    page.get_by_role("option", name="NVIDIA T4", exact=False).first.click()
    first = _run(page, preset="w4-g128")

    # the page asked for the run the runner made for the same settings, and measured the same quality
    report = served.manager.get_run(first).load_report()
    assert report.request == demo_run.report.request
    assert report.compressed.perplexity == pytest.approx(demo_run.report.compressed.perplexity, rel=1e-4)
    assert report.timings.baseline_cached  # the demo run's baseline, from the cache

    cards = page.locator("#lab-cards")
    expect(cards).to_contain_text("Weight memory")
    expect(cards).to_contain_text("baseline quality from the cache")
    expect(cards).to_contain_text("kernel:")  # the kernel path beside the decode figure
    samples = page.locator("#lab-samples .lab-sample")
    assert samples.count() >= 2 and samples.first.locator(".lab-gen").count() == 2
    _shoot(page, "result-desktop", tmp_path)
    expect(page.locator("#lab-fit")).to_be_visible()  # "Fit to hardware" under the preset picker (ui/fit.py)

    # the Download tab builds the run's files when opened: the first click downloads (ui/export.py)
    open_tab(page, "Download")
    ct = page.locator("#lab-export-compressed-tensors")
    expect(ct).to_be_enabled(timeout=120_000)
    expect(page.locator("#lab-export-compressed-tensors-note")).to_contain_text("lossless")
    with page.expect_download(timeout=60_000) as download:
        ct.click()
    assert download.value.suggested_filename.endswith(f"{first}-compressed-tensors.zip")
    open_tab(page, "Sweep")
    expect(page.locator("#lab-sweep-models")).to_be_visible()  # the Sweep tab (ui/sweep.py) is mounted
    open_tab(page, "Plots")
    expect(page.locator("#lab-plot-layers .js-plotly-plot")).to_be_visible(timeout=60_000)
    _shoot(page, "plots-desktop", tmp_path)

    # another profile: projected again from the stored report, at once, with no new run
    runs_before = len(served.manager.list_runs(include_report=False))
    open_tab(page, "Hardware")
    panel = page.locator("#lab-hardware-panel")
    expect(panel).to_contain_text("NVIDIA T4")
    page.locator("#lab-hardware input").click()
    t0 = time.time()
    page.get_by_role("option", name="H100", exact=False).first.click()
    expect(panel).to_contain_text("H100", timeout=10_000)
    print(f"re-projected in the browser after {time.time() - t0:.2f} s")
    expect(page.locator("#lab-cards")).to_contain_text("Decode on NVIDIA H100")
    assert "T4" not in panel.inner_text()
    assert len(served.manager.list_runs(include_report=False)) == runs_before
    _shoot(page, "hardware-desktop", tmp_path)

    # phone width: the same run (a link opens it), nothing clipped
    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(f"{served.url}?run={first}")
    expect(phone.locator("#lab-cards")).to_contain_text("Weight memory", timeout=60_000)
    _no_overflow(phone)
    _shoot(phone, "result-phone", tmp_path)
    open_tab(phone, "Plots")
    expect(phone.locator("#lab-plot-layers .js-plotly-plot")).to_be_visible(timeout=60_000)
    _no_overflow(phone)
    _shoot(phone, "plots-phone", tmp_path)
    for tab in ("Sweep", "Download"):  # the tabs mounted from other helpers' panels fit a phone too
        open_tab(phone, tab)
        phone.wait_for_timeout(500)
        _no_overflow(phone)

    # a second run (two stages: the cards attribute the change to each), then both side by side
    open_tab(page, "Download")  # left open: the run's files are built when it ends
    second = _run(page, recipe=TWO_STAGES)
    # the tab followed the new run when it ended: compressed-tensors cannot hold its KV-cache stage, and says so
    expect(page.locator("#lab-export-compressed-tensors-note")).to_contain_text("kivi", timeout=120_000)
    expect(ct).to_be_disabled()
    open_tab(page, "Result")
    expect(page.locator("#lab-attribution")).to_contain_text("1: kivi")
    page.goto(f"{served.url}?run={second}&compare={first},{second}")  # a link to the comparison
    open_tab(page, "Compare")
    table = page.locator("#lab-compare-table")
    expect(table).to_contain_text("kivi", timeout=60_000)
    expect(page.locator("#lab-compare-plot .js-plotly-plot")).to_be_visible(timeout=60_000)
    _shoot(page, "compare-desktop", tmp_path)
    phone.goto(f"{served.url}?run={second}&compare={first},{second}")
    open_tab(phone, "Compare")
    expect(phone.locator("#lab-compare-table")).to_contain_text("kivi", timeout=60_000)
    _no_overflow(phone)
    _shoot(phone, "compare-phone", tmp_path)
    assert not outside, f"the page made requests outside the app: {outside[:5]}"
    context.close()
