"""Two visitors in a real browser (two Chromium contexts: two localStorages), on the page over a job manager
whose jobs only sleep (the `sleepy` fixture): Cancel cancels the visitor's own run and the next one
starts; a reload keeps the visitor's runs (and follows the one still going); the other visitor can neither
open nor cancel it."""

from __future__ import annotations

import re
import time

import pytest

from tests.ui.pages import GRACE_S, open_tab

pytestmark = pytest.mark.browser

STATUS_TIMEOUT_MS = 60_000


def _run_id(page) -> str:
    from playwright.sync_api import expect

    status = page.locator("#lab-status")
    expect(status).to_contain_text(re.compile(r"Run `?\w{12}`? is running"), timeout=STATUS_TIMEOUT_MS)
    return re.search(r"Run `?(\w{12})`? is running", status.inner_text()).group(1)


def test_cancel_then_a_new_run_and_a_reload_keep_to_their_visitor(browser, sleepy):
    from playwright.sync_api import expect

    alice_ctx, bob_ctx = browser.new_context(), browser.new_context()
    alice, bob = alice_ctx.new_page(), bob_ctx.new_page()
    try:
        alice.goto(sleepy.url)
        alice.locator("#lab-run").click()
        first = _run_id(alice)

        # bob is another visitor: alice's run is not his to open or cancel
        bob.goto(f"{sleepy.url}?run={first}")
        expect(bob.locator("#lab-status")).to_contain_text("Cannot open the linked run", timeout=STATUS_TIMEOUT_MS)
        bob.locator("#lab-cancel").click()
        expect(bob.locator("#lab-status")).to_contain_text("Nothing is running")
        assert sleepy.manager.status(first) == "running"
        bob.locator("#lab-run").click()  # bob's own run: queued behind alice's (one worker)
        bobs = _submitted(bob)

        alice.locator("#lab-cancel").click()
        expect(alice.locator("#lab-status")).to_contain_text(f"Run {first} cancelled", timeout=STATUS_TIMEOUT_MS)
        assert sleepy.manager.get_run(first).status == "cancelled"
        assert sleepy.manager.status(bobs) in ("queued", "running")  # alice's cancel left bob's run alone

        alice.locator("#lab-run").click()  # the next run starts (after bob's, which took the worker)
        _submitted(alice)
        bob.locator("#lab-cancel").click()  # bob cancels his own; alice's goes on and starts
        expect(bob.locator("#lab-status")).to_contain_text(f"Run {bobs} cancelled", timeout=STATUS_TIMEOUT_MS)
        second = _run_id(alice)
        assert second not in (first, bobs) and sleepy.manager.status(second) == "running"

        alice.reload()  # the page finds alice's run again and follows it; Cancel still works
        assert _run_id(alice) == second
        assert f"run={second}" in alice.url
        alice.locator("#lab-cancel").click()
        expect(alice.locator("#lab-status")).to_contain_text(f"Run {second} cancelled", timeout=STATUS_TIMEOUT_MS)

        open_tab(alice, "History")  # after a reload each sees their own runs, not the other's
        history = alice.locator("#lab-history")
        expect(history).to_contain_text(first, timeout=STATUS_TIMEOUT_MS)
        expect(history).to_contain_text(second)
        assert bobs not in history.inner_text()
        bob.reload()
        open_tab(bob, "History")
        expect(bob.locator("#lab-history")).to_contain_text(bobs, timeout=STATUS_TIMEOUT_MS)
        text = bob.locator("#lab-history").inner_text()
        assert first not in text and second not in text
    finally:
        alice_ctx.close()
        bob_ctx.close()


def _submitted(page) -> str:
    """The id of the run the page just submitted (queued or running)."""
    from playwright.sync_api import expect

    status = page.locator("#lab-status")
    expect(status).to_contain_text(re.compile(r"Run `?\w{12}`? (is|submitted)"), timeout=STATUS_TIMEOUT_MS)
    return re.search(r"Run `?(\w{12})", status.inner_text()).group(1)


def test_a_run_is_cancelled_a_grace_period_after_its_visitor_leaves(browser, sleepy):
    context = browser.new_context()
    page = context.new_page()
    page.goto(sleepy.url)
    page.locator("#lab-run").click()
    rid = _run_id(page)
    t0 = time.monotonic()
    page.close()  # the tab goes: Gradio's unload event names the session, the page tells the manager
    context.close()
    run = sleepy.manager.wait(rid, timeout=GRACE_S + 60)
    print(f"cancelled {time.monotonic() - t0:.1f} s after the tab closed (grace {GRACE_S:g} s)")
    assert run.status == "cancelled" and "left" in (run.error or ""), run.error
    assert time.monotonic() - t0 >= GRACE_S - 1  # not before the grace period
