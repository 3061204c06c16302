"""Helpers for the page's end-to-end tests: API sessions, the demo run's settings as /run arguments, and
a browser page's settings and status (fixtures: tests/ui/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLEEP_TARGET = "tests.jobtargets:sleep_then_return"
GRACE_S = 8.0  # the sleepy app lets go of a departed visitor's runs after this (a reload comes back sooner)
# The demo run's evaluation settings, in the page's slider order (ui.request.EVAL_FIELDS): a run on the
# page with these finds the demo run's baseline quality in the cache (tests/conftest.py DEMO_RUN_PAYLOAD).
DEMO_EVAL = {"ppl_tokens": 512, "context": 256, "arithmetic_samples": 24, "max_new_tokens": 8}
SLIDER_LABELS = {"ppl_tokens": "Text tokens scored", "context": "Context length", "arithmetic_samples":
                 "Arithmetic problems", "max_new_tokens": "New tokens per sample answer"}


def client(url: str):
    """A new API session: a visitor of its own."""
    gradio_client = pytest.importorskip("gradio_client")
    # download_files=False: the report JSON holds paths that are data, not files to fetch
    return gradio_client.Client(url, verbose=False, download_files=False)


def run_args(recipe: str = "w4-g128", hardware: str = "t4", model: str = "demo", evaluation: str = "quick") -> list:
    """/run's arguments for `recipe` with the demo run's evaluation settings (the quick preset's, but for
    the number of problems and sample tokens)."""
    return [model, recipe, hardware, False, *DEMO_EVAL.values(), 2048, 1, evaluation]


def owner_of_client(c) -> str:
    """The owner the page records for an API session (ui.visitors.owner_of)."""
    return f"s-{c.session_hash}"


def set_demo_settings(page, model: str = "demo") -> None:
    """Picks `model` and the demo run's evaluation settings on a browser page."""
    box = page.locator("#lab-model input")
    box.fill(model)
    box.press("Enter")
    page.get_by_text("Evaluation settings").click()
    for name, value in DEMO_EVAL.items():
        slider = page.get_by_label(SLIDER_LABELS[name], exact=False).and_(page.locator("input[type=number]"))
        slider.fill(str(value))
        slider.press("Enter")


def open_tab(page, name: str) -> None:
    """Clicks the results' tab `name`, through the "More tabs" menu where a narrow screen folds it away."""
    page.locator(".lab-results [role=tablist] [role=tab]").first.wait_for()  # the tabs are drawn
    tab = page.locator(".lab-results [role=tablist] [role=tab]", has_text=name).first
    if tab.is_visible():
        tab.click()
        return
    page.locator(".lab-results button[aria-label='More tabs']").first.click()
    page.locator(".lab-results .overflow-dropdown button", has_text=name).first.click()
