"""The demo page served from a second origin, in headless Chromium: CORS as a browser enforces it.

One liveproxy serves the page (its origin is the page's); the page talks to another through
``?server=``. Allowed in ``ALLOWED_ORIGINS``, the page reads its models and a typed turn is
answered; not allowed, the browser blocks the preflighted sign-in and the page says why. (A
disallowed origin's ``/ws`` getting 4003 is in ``tests/web/test_access.py``: a browser gives a
page no way to open it.)
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, Page, expect

from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import (
    ELSEWHERE,
    WAIT_MS,
    connect,
    disconnect,
    in_browser,
    model_said,
    shown_on_failure,
    start_proxy,
    type_message,
)
from tests.browser.speech_wav import write_speech_wav

pytestmark = pytest.mark.browser


@pytest.mark.usefixtures("chromium")
async def test_the_page_on_another_origin_works_only_when_that_origin_is_allowed(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    page_server = await start_proxy(nursery, emulator)
    allowing = await start_proxy(nursery, emulator, allowed_origins=frozenset({page_server}))
    refusing = await start_proxy(nursery, emulator, allowed_origins=frozenset({ELSEWHERE}))
    wav = write_speech_wav(tmp_path / "speech.wav")
    await in_browser(wav.path, partial(drive, page_server, allowing, refusing, tmp_path))


def drive(page_server: str, allowing: str, refusing: str, out_dir: Path, browser: Browser) -> None:
    page, _ = open_page(browser, page_server, WAIT_MS)
    with shown_on_failure(page, out_dir):
        page.goto(f"{page_server}/?server={allowing}/")
        expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
        typed_turn(page)
        page.goto(f"{page_server}/?server={refusing}/")
        expect(page.locator("#mode")).to_have_text("The server did not answer; is it running?")
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.locator("#ending")).to_contain_text(
            f"does not allow this page's origin ({page_server}; see ALLOWED_ORIGINS)"
        )


def typed_turn(page: Page) -> None:
    """A typed turn, answered in speech (the default model gives no text answers: the page
    read that from the allowing server's /api/status) and shown by its transcript."""
    expect(page.get_by_label("Text", exact=True)).to_be_disabled()
    connect(page)
    page.get_by_role("button", name="Mute microphone").click()
    type_message(page, "hi from another origin")
    model_said(page, 'You said: "hi from another origin"')
    disconnect(page)
