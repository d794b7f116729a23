"""The demo page at ``/demo/`` of a server that serves an app from ``STATIC_DIR`` at ``/``, in
headless Chromium: its files load from ``/demo/``, and its ``api/status``, ``api/auth`` and ``ws``
reach the server's own (not the app's client-side routes)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, expect

from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import WAIT_MS, in_browser, start_proxy
from tests.browser.speech_wav import write_speech_wav
from tests.browser.test_second_origin import typed_turn

pytestmark = pytest.mark.browser

APP = "<!doctype html><title>seed app</title><p id=app>the app</p>"


@pytest.mark.usefixtures("chromium")
async def test_the_demo_page_beside_an_app(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(APP)
    base_url = await start_proxy(nursery, emulator, static_dir=dist)
    wav = write_speech_wav(tmp_path / "speech.wav")
    await in_browser(wav.path, partial(drive, base_url))


def drive(base_url: str, browser: Browser) -> None:
    page, problems = open_page(browser, base_url, WAIT_MS)
    page.goto(f"{base_url}/")
    expect(page).to_have_title("seed app")
    page.goto(f"{base_url}/demo/")
    expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
    typed_turn(page)
    assert problems == []
