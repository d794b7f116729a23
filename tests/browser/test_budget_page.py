"""The demo page's usage view, in headless Chromium, against liveproxy and the emulator: the
budget left (``GET /api/usage``) when the page loads, the session ended by its budget, what it
used (``sessionEnd.stats.usage``) and the budget then left.

The fake microphone plays silence, so only the typed turns are answered (in text).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from liveproxy.allowances import parse_budget
from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import LIVE, WAIT_MS, in_browser, start_proxy
from tests.browser.speech_wav import write_silent_wav
from tests.models import TEST_MODEL

pytestmark = pytest.mark.browser

#: The model answered the n-th entry, or the session ended.
TURN_OR_END = """n => document.querySelectorAll("#transcript li").length >= n
    || !document.getElementById("ending").hidden"""


@pytest.mark.usefixtures("chromium")
async def test_the_page_shows_the_budget_left_and_what_the_session_used(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    base_url = await start_proxy(
        nursery, emulator, model=TEST_MODEL, budget_per_client=parse_budget("40 tokens/day")
    )
    await in_browser(write_silent_wav(tmp_path / "silence.wav"), partial(drive, base_url))


def drive(base_url: str, browser: Browser) -> None:
    page, problems = open_page(browser, base_url, WAIT_MS)
    page.goto(f"{base_url}/")
    expect(page.locator("#budget")).to_have_text("40 of 40 tokens this day left")
    page.locator("input[name=modality][value=TEXT]").check()
    page.locator("#connect").click()
    expect(page.locator("#status")).to_have_text(LIVE)
    for n in range(10):
        try:  # the session may end as a turn ends: the input is then disabled
            page.locator("#text-input").fill(f"turn {n}", timeout=3000)
            page.locator("#send").click(timeout=3000)
        except PlaywrightTimeoutError:
            break
        page.wait_for_function(TURN_OR_END, arg=2 * (n + 1))
    expect(page.locator("#ending")).to_contain_text("usage budget is used up")
    used = page.locator("#session-usage")
    expect(used).to_have_text(re.compile(r"^\d+ tokens(, [\d.]+ s of audio in)?$"))
    tokens = int(used.inner_text().split()[0])
    assert 40 <= tokens <= 40 + 2 * 21  # within two turns of the limit (7, 14, 21 ...)
    expect(page.locator("#budget")).to_have_text("0 of 40 tokens this day left")
    assert problems == []
