"""The demo page's tool log shows the server's own tool calls as they run and finish, in
headless Chromium, against liveproxy (serving the example tools, as ``make run`` does) and the
emulator. The page never answers them: the model's answer names the server's result."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, Page, expect

from liveproxy.emulator import Emulator
from liveproxy.serving.server import EXAMPLE_TOOLS
from tests.browser.chromium import open_page
from tests.browser.pages import (
    WAIT_MS,
    connect,
    in_browser,
    model_said,
    start_proxy,
    type_message,
)
from tests.browser.speech_wav import write_silent_wav
from tests.models import TEST_MODEL

pytestmark = pytest.mark.browser


@pytest.mark.usefixtures("chromium")
async def test_the_tool_log_shows_a_server_call_running_then_done(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    base_url = await start_proxy(
        nursery, emulator, model=TEST_MODEL, tools_modules=(EXAMPLE_TOOLS,)
    )
    await in_browser(write_silent_wav(tmp_path / "silence.wav"), partial(drive, base_url))


def drive(base_url: str, browser: Browser) -> None:
    page, problems = open_page(browser, base_url, WAIT_MS)
    page.goto(f"{base_url}/")
    call_the_servers_tool(page)
    assert problems == []


def call_the_servers_tool(page: Page) -> None:
    page.get_by_label("Text", exact=True).check()
    connect(page)
    type_message(page, 'call get_time {"timezone": "UTC"}')
    log = page.locator("#tool-log li")
    expect(log.filter(has_text='get_time({"timezone":"UTC"}) running on the server')).to_have_count(
        1
    )
    expect(log.filter(has_text='get_time on the server → {"timezone":"UTC"')).to_have_count(1)
    model_said(page, 'get_time returned {"timezone":"UTC"')
    assert page.locator("#tool-log li[data-kind='answered']").count() == 0  # not the page's
