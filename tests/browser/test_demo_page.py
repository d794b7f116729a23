"""End to end: the demo page (``/``, which leads to ``/demo/``) in headless Chromium, against
liveproxy and the emulator.

Chromium's fake microphone loops a generated speech-like WAV (:mod:`.speech_wav`); the emulator
(speed ``fast``) hears each utterance with its energy VAD and answers with it, resampled to 24 kHz.
The servers run in the test's nursery; Playwright has no trio API, so its sync API drives the page
from a worker thread (``trio.to_thread``). Every wait is a Playwright wait with a timeout: no
sleeps, no fake clock (the browser lives in real time).

Output: screenshots ``live.png`` (mid-conversation) and ``ended.png`` in the test's ``tmp_path``
(pytest keeps the last three runs under its basetemp, e.g.
``/tmp/pytest-of-$USER/pytest-current/test_demo_page_end_to_end0/``). With
``LIVEPROXY_UPDATE_SCREENSHOT=1`` the live one is also copied to ``docs/screenshot.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import (
    ConsoleMessage,
    Page,
    Response,
    WebSocket,
    expect,
    sync_playwright,
)

from liveproxy.config import Config
from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.server import serve
from tests.browser.chromium import launch
from tests.browser.speech_wav import SpeechWav, write_speech_wav

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
WAIT_MS = 15_000
TEST_DEADLINE = 120
#: The VAD keeps 100 ms before the onset; allow for the browser's audio processing on top.
DURATION_TOLERANCE = 0.25
SPEECH = re.compile(r"\[speech (\d+\.\d\d) s\]")


@pytest.mark.usefixtures("chromium")
async def test_demo_page_end_to_end(nursery: trio.Nursery, tmp_path: Path) -> None:
    wav = write_speech_wav(tmp_path / "speech.wav")
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    # session_min_seconds=1 lets the page ask for a 3-second session to see it end on its own.
    config = Config(api_key="k", upstream_url=emulator.url, port=0, session_min_seconds=1)
    stop = trio.Event()
    urls: list[str] = await nursery.start(partial(serve, config, stop=stop))
    refuse_upstream = partial(
        trio.from_thread.run_sync, emulator.set_faults, Faults(reject_status=403)
    )
    try:
        # Every Playwright step has its own timeout; this guard only catches a hung browser.
        with trio.fail_after(TEST_DEADLINE):
            await trio.to_thread.run_sync(
                drive_page, urls[0], wav, tmp_path, refuse_upstream, abandon_on_cancel=True
            )
    finally:
        stop.set()
    if os.environ.get("LIVEPROXY_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "live.png", DOCS_SCREENSHOT)


def drive_page(
    base_url: str, wav: SpeechWav, out_dir: Path, refuse_upstream: Callable[[], None]
) -> None:
    """The whole browser side; raises AssertionError (Playwright's ``expect``) on a failure.

    ``refuse_upstream`` makes the emulator refuse new connections (it runs in the trio thread).
    """
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = launch(playwright, wav.path)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            context.grant_permissions(["microphone"], origin=base_url)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            problems: list[str] = []
            console: list[str] = []
            tokens: list[Response] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", partial(_console, console, problems))
            page.on("response", lambda r: tokens.append(r) if r.url.endswith("/api/auth") else None)
            setups: list[dict[str, Any]] = []
            page.on("websocket", partial(record_setups, setups))

            page.goto(f"{base_url}/")
            expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
            try:
                talk_and_type(page, wav, out_dir)
                short_session_on_the_default_model(page)
                refuse_upstream()
                refused_session(page)
            except AssertionError:
                page.screenshot(path=out_dir / "failure.png")
                print(f"page at the failure (screenshot: {out_dir / 'failure.png'}):")
                print(page.locator("main").inner_text())
                raise

            secrets = [response.json()["session_token"] for response in tokens]
            assert len(secrets) == 3
            shown = page.content() + "\n".join(console)
            assert not [s for s in secrets if s in shown], "a session token reached the page"
            assert problems == []
            # The default model (gemini-3.8-live) speaks only: every setup asked for audio.
            modalities = [s["generation_config"]["response_modalities"] for s in setups]
            assert modalities == [["AUDIO"]] * 3, setups
            assert not [s for s in setups if "model" in s], "the server's own model was named"
        finally:
            browser.close()


def record_setups(setups: list[dict[str, Any]], socket: WebSocket) -> None:
    """Keep the ``setup`` of every socket the page opens (its first text frame)."""

    def sent(payload: str | bytes) -> None:
        if isinstance(payload, str) and payload.startswith('{"setup"'):
            setups.append(json.loads(payload)["setup"])

    socket.on("framesent", sent)


def _console(console: list[str], problems: list[str], message: ConsoleMessage) -> None:
    console.append(message.text)
    if message.type == "error":
        problems.append(f"console error: {message.text}")


def talk_and_type(page: Page, wav: SpeechWav, out_dir: Path) -> None:
    """An AUDIO session: speech both ways, then (microphone muted, so no utterance can barge in
    on the answers) a typed turn and a tool call, then Disconnect."""
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#timer")).to_have_text(re.compile(r"^[23]:\d\d$"))  # 180 s by default

    transcript = page.locator("#transcript")
    heard = transcript.locator("li[data-speaker='user']:not([data-typed])")
    said = transcript.locator("li[data-speaker='model']")
    # Both utterances of the fixture, each heard at its length: the mic worklet's 16 kHz is right.
    expect(heard).to_have_count(2)
    durations = [float(m[1]) for t in heard.all_inner_texts() for m in SPEECH.finditer(t)]
    expected = [length + 0.1 for length in wav.utterances]
    assert any(abs(d - e) <= DURATION_TOLERANCE for d in durations for e in expected), (
        durations,
        expected,
    )
    expect(said.filter(has_text="You said: [speech")).to_have_count(2)
    # The replies' audio arrives as binary frames and the player worklet plays it.
    page.wait_for_function("() => window.liveproxyDemo.stats.samplesPlayed >= 24000")
    stats = page.evaluate("() => ({...window.liveproxyDemo.stats})")
    assert stats["framesSent"] > 0, stats
    assert stats["bytesReceived"] >= 2 * 24_000 * min(wav.utterances), stats

    mute = page.get_by_role("button", name="Mute microphone")
    mute.click()
    expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    text_box = page.get_by_label("Type a message")
    text_box.fill("hello from the browser test")
    text_box.press("Enter")
    expect(transcript.locator("li[data-typed='true']")).to_contain_text(
        "hello from the browser test"
    )
    expect(said.filter(has_text='You said: "hello from the browser test"')).to_have_count(1)

    text_box.fill('call get_weather {"location":"Tokyo"}')
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#tool-log li").first).to_contain_text(
        'get_weather({"location":"Tokyo"}) → {"location":"Tokyo","forecast":"sunny"'
    )
    expect(said.filter(has_text='get_weather returned {"location":"Tokyo"')).to_have_count(1)
    page.screenshot(path=out_dir / "live.png")

    page.get_by_role("button", name="Disconnect").click()
    ending = page.locator("#ending")
    expect(ending).to_have_text("You ended the session. (close code 1000)")
    expect(ending).to_have_attribute("data-close-code", "1000")
    expect(page.locator("#status")).to_have_attribute("data-state", "ended")
    page.screenshot(path=out_dir / "ended.png")


def short_session_on_the_default_model(page: Page) -> None:
    """A 3-second session (microphone muted): the server's model speaks only, so the page
    offers no text answers; a typed turn is answered (its transcript), then the server's time
    limit ends the session and the page says so."""
    page.get_by_label("Session length (seconds)").fill("3")
    expect(page.get_by_label("Text", exact=True)).to_be_disabled()
    expect(page.get_by_label("Audio", exact=True)).to_be_checked()
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#timer")).to_have_text(re.compile(r"^0:0[0-3]$"))
    page.get_by_role("button", name="Mute microphone").click()
    text_box = page.get_by_label("Type a message")
    text_box.fill("hi")
    text_box.press("Enter")
    said = page.locator("#transcript li[data-speaker='model']")
    expect(said.filter(has_text='You said: "hi"')).to_have_count(1)
    ending = page.locator("#ending")
    expect(ending).to_have_text("The session reached its time limit. (close code 1000)")
    expect(ending).to_have_attribute("data-close-code", "1000")


def refused_session(page: Page) -> None:
    """Upstream refuses the connection: the page shows the proxy's error and its close code."""
    page.get_by_role("button", name="Connect", exact=True).click()
    ending = page.locator("#ending")
    expect(ending).to_have_text(
        re.compile(r"^The model refused the session .*HTTP 403.* \(close code 1011\)$")
    )
    expect(ending).to_have_attribute("data-close-code", "1011")
    expect(page.locator("#status")).to_have_attribute("data-state", "ended")
