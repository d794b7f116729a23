"""The demo page's tool log shows the server's own tool calls as they run and finish, in
headless Chromium, against liveproxy (serving the example tools, as ``make run`` does) and the
emulator. The page never answers them: the model's answer names the server's result."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from liveproxy.config import Config
from liveproxy.emulator import Emulator, EmulatorConfig
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.server import EXAMPLE_TOOLS, serve
from tests.browser.chromium import launch, open_page
from tests.browser.speech_wav import write_silent_wav
from tests.models import TEST_MODEL

pytestmark = pytest.mark.browser

WAIT_MS = 15_000


@pytest.mark.usefixtures("chromium")
async def test_the_tool_log_shows_a_server_call_running_then_done(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    config = Config(
        api_key="k",
        upstream_url=emulator.url,
        port=0,
        model=TEST_MODEL,
        tools_modules=(EXAMPLE_TOOLS,),
    )
    stop = trio.Event()
    urls: list[str] = await nursery.start(partial(serve, config, stop=stop))
    wav = write_silent_wav(tmp_path / "silence.wav")
    try:
        with trio.fail_after(120):
            await trio.to_thread.run_sync(drive, urls[0], wav, abandon_on_cancel=True)
    finally:
        stop.set()


def drive(base_url: str, wav: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav)
        try:
            page, problems = open_page(browser, base_url, WAIT_MS)
            page.goto(f"{base_url}/")
            call_the_servers_tool(page)
            assert problems == []
        finally:
            browser.close()


def call_the_servers_tool(page: Page) -> None:
    page.get_by_label("Text", exact=True).check()
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    text_box = page.get_by_label("Type a message")
    text_box.fill('call get_time {"timezone": "UTC"}')
    text_box.press("Enter")
    log = page.locator("#tool-log li")
    expect(log.filter(has_text='get_time({"timezone":"UTC"}) running on the server')).to_have_count(
        1
    )
    expect(log.filter(has_text='get_time on the server → {"timezone":"UTC"')).to_have_count(1)
    said = page.locator("#transcript li[data-speaker='model']")
    expect(said.filter(has_text='get_time returned {"timezone":"UTC"')).to_have_count(1)
    assert page.locator("#tool-log li[data-kind='answered']").count() == 0  # not the page's
