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
from playwright.sync_api import Page, expect, sync_playwright

from liveproxy.config import Config
from liveproxy.emulator import Emulator, EmulatorConfig
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.server import serve
from tests.browser.chromium import launch
from tests.browser.speech_wav import write_speech_wav

pytestmark = pytest.mark.browser

WAIT_MS = 15_000


async def start_proxy(nursery: trio.Nursery, emulator: Emulator, **settings: object) -> str:
    config = Config(api_key="k", upstream_url=emulator.url, port=0, **settings)  # type: ignore[arg-type]
    stop = trio.Event()
    urls: list[str] = await nursery.start(partial(serve, config, stop=stop))
    return urls[0]


@pytest.mark.usefixtures("chromium")
async def test_the_page_on_another_origin_works_only_when_that_origin_is_allowed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    page_server = await start_proxy(nursery, emulator)
    allowing = await start_proxy(nursery, emulator, allowed_origins=frozenset({page_server}))
    refusing = await start_proxy(
        nursery, emulator, allowed_origins=frozenset({"https://app.example.com"})
    )
    wav = write_speech_wav(tmp_path / "speech.wav")
    with trio.fail_after(120):
        await trio.to_thread.run_sync(
            drive, page_server, allowing, refusing, wav.path, tmp_path, abandon_on_cancel=True
        )


def drive(page_server: str, allowing: str, refusing: str, wav: Path, out_dir: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav)
        try:
            context = browser.new_context()
            context.grant_permissions(["microphone"], origin=page_server)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            try:
                page.goto(f"{page_server}/?server={allowing}/")
                expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
                typed_turn(page)
                page.goto(f"{page_server}/?server={refusing}/")
                expect(page.locator("#mode")).to_have_text(
                    "The server did not answer; is it running?"
                )
                page.get_by_role("button", name="Connect", exact=True).click()
                expect(page.locator("#ending")).to_contain_text(
                    f"does not allow this page's origin ({page_server}; see ALLOWED_ORIGINS)"
                )
            except AssertionError:
                page.screenshot(path=out_dir / "failure.png")
                print(page.locator("main").inner_text())
                raise
        finally:
            browser.close()


def typed_turn(page: Page) -> None:
    """A typed turn, answered in speech (the default model gives no text answers: the page
    read that from the allowing server's /api/status) and shown by its transcript."""
    expect(page.get_by_label("Text", exact=True)).to_be_disabled()
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    page.get_by_role("button", name="Mute microphone").click()
    text_box = page.get_by_label("Type a message")
    text_box.fill("hi from another origin")
    text_box.press("Enter")
    said = page.locator("#transcript li[data-speaker='model']")
    expect(said.filter(has_text='You said: "hi from another origin"')).to_have_count(1)
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "ended")
