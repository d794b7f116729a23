"""The demo page at ``/demo/`` of a server that serves an app from ``STATIC_DIR`` at ``/``, in
headless Chromium: its files load from ``/demo/``, and its ``api/status``, ``api/auth`` and ``ws``
reach the server's own (not the app's client-side routes)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from liveproxy.config import Config
from liveproxy.emulator import Emulator, EmulatorConfig
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.server import serve
from tests.browser.chromium import launch, open_page
from tests.browser.speech_wav import write_speech_wav
from tests.browser.test_second_origin import typed_turn

pytestmark = pytest.mark.browser

WAIT_MS = 15_000
APP = "<!doctype html><title>seed app</title><p id=app>the app</p>"


@pytest.mark.usefixtures("chromium")
async def test_the_demo_page_beside_an_app(nursery: trio.Nursery, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text(APP)
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    config = Config(api_key="k", upstream_url=emulator.url, port=0, static_dir=dist)
    stop = trio.Event()
    urls: list[str] = await nursery.start(partial(serve, config, stop=stop))
    wav = write_speech_wav(tmp_path / "speech.wav")
    try:
        with trio.fail_after(120):
            await trio.to_thread.run_sync(drive, urls[0], wav.path, abandon_on_cancel=True)
    finally:
        stop.set()


def drive(base_url: str, wav: Path) -> None:
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav)
        try:
            page, problems = open_page(browser, base_url, WAIT_MS)
            page.goto(f"{base_url}/")
            expect(page).to_have_title("seed app")
            page.goto(f"{base_url}/demo/")
            expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
            typed_turn(page)
            assert problems == []
        finally:
            browser.close()
