"""What the demo pages' browser tests share: the servers behind a page, Chromium driven from a
worker thread, the pages' common steps (connect, a typed turn, disconnect) and the report of a
failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from liveproxy.config import Config
from liveproxy.emulator import Emulator
from liveproxy.serving.server import serve
from tests.browser.chromium import launch

#: How long any one Playwright step may wait.
WAIT_MS = 15_000
#: The text the status line shows while a session is live.
LIVE = "Live: speak, or type a message."
#: An origin that is not the page's (for ``ALLOWED_ORIGINS``).
ELSEWHERE = "https://app.example.com"

T = TypeVar("T")


def proxy_config(emulator: Emulator, **settings: object) -> Config:
    """A liveproxy's settings: in front of ``emulator``, on a free port, and ``settings``."""
    return Config(api_key="k", upstream_url=emulator.url, port=0, **settings)  # type: ignore[arg-type]


async def start_server(nursery: trio.Nursery, config: Config) -> str:
    """A liveproxy in ``nursery``; its URL. It stops when the nursery is cancelled."""
    urls: list[str] = await nursery.start(partial(serve, config, stop=trio.Event()))
    return urls[0]


async def start_proxy(nursery: trio.Nursery, emulator: Emulator, **settings: object) -> str:
    """A liveproxy in ``nursery`` in front of ``emulator`` (``settings``: more of its Config);
    its URL."""
    return await start_server(nursery, proxy_config(emulator, **settings))


async def in_browser(wav: Path, scenario: Callable[[Browser], T], deadline: float = 120) -> T:
    """Run ``scenario`` with a Chromium whose microphone plays ``wav``, in a worker thread
    (Playwright has no trio API), within ``deadline`` seconds; its result. The browser is closed
    either way."""

    def run() -> T:
        expect.set_options(timeout=WAIT_MS)
        with sync_playwright() as playwright:
            browser = launch(playwright, wav)
            try:
                return scenario(browser)
            finally:
                browser.close()

    with trio.fail_after(deadline):
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


@contextmanager
def shown_on_failure(page: Page, out_dir: Path) -> Iterator[None]:
    """On an AssertionError inside: a screenshot of ``page`` in ``out_dir`` and its text printed,
    then the error raised again."""
    try:
        yield
    except AssertionError:
        page.screenshot(path=out_dir / "failure.png")
        print(f"page at the failure (screenshot: {out_dir / 'failure.png'}):")
        print(page.locator("main").inner_text())
        raise


def connect(page: Page) -> None:
    """Click Connect; wait until the session is live."""
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")


def disconnect(page: Page) -> None:
    """Click Disconnect; wait until the session has ended."""
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "ended")


def type_message(page: Page, text: str) -> None:
    text_box = page.get_by_label("Type a message")
    text_box.fill(text)
    text_box.press("Enter")


def model_said(page: Page, text: str) -> None:
    """Wait until one entry of the model's contains ``text``."""
    said = page.locator("#transcript li[data-speaker='model']")
    expect(said.filter(has_text=text)).to_have_count(1)


def say(page: Page, text: str) -> None:
    """A typed turn, answered (the emulator repeats it), its answer complete (turnComplete)."""
    type_message(page, text)
    answer = page.locator("#transcript li[data-speaker='model']").filter(
        has_text=f'You said: "{text}"'
    )
    expect(answer).to_have_attribute("data-final", "true")
