"""The demo page's model picker, in headless Chromium, against liveproxy and the emulator.

The server's model is the default (``gemini-3.8-live``, audio only) and ``ALLOWED_MODELS`` names
three more. The picker lists them (the default first), and the answer radios follow the chosen
model: Text is offered for the model that answers in text and a typed turn comes back in text
parts; an audio-only model disables Text and picks Audio by itself; the extended-thinking model
reports ``interactionStatus``, and the status line says "thinking…" until it is ``IDLE``.

The fake microphone plays silence, so only the typed turns are answered.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Page, WebSocket, expect

from liveproxy.config import DEFAULT_MODEL
from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import (
    LIVE,
    WAIT_MS,
    connect,
    disconnect,
    in_browser,
    model_said,
    proxy_config,
    shown_on_failure,
    start_server,
    type_message,
)
from tests.browser.speech_wav import write_silent_wav
from tests.models import TEST_MODEL

pytestmark = pytest.mark.browser

AUDIO_ONLY = "gemini-2.5-flash-native-audio-preview-12-2025"
THINKING = "gemini-3.8-live-extended-thinking"
#: Every text the status line shows, in order (installed before the page's own scripts run).
WATCH_STATUS = """
window.__statuses = [];
new MutationObserver(() => {
  const text = document.getElementById("status")?.textContent;
  if (text && window.__statuses.at(-1) !== text) window.__statuses.push(text);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.mark.usefixtures("chromium")
async def test_the_picker_lists_the_allowed_models_and_offers_what_each_outputs(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    config = proxy_config(emulator, allowed_models=frozenset({TEST_MODEL, AUDIO_ONLY, THINKING}))
    assert config.model == DEFAULT_MODEL == "gemini-3.8-live"
    base_url = await start_server(nursery, config)
    wav = write_silent_wav(tmp_path / "silence.wav")
    await in_browser(wav, partial(drive, base_url, tmp_path))


def drive(base_url: str, out_dir: Path, browser: Browser) -> None:
    page, problems = open_page(browser, base_url, WAIT_MS)
    setups: list[dict[str, Any]] = []
    page.on("websocket", partial(record_setups, setups))
    page.add_init_script(WATCH_STATUS)
    page.goto(f"{base_url}/")
    expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
    with shown_on_failure(page, out_dir):
        pick_models(page)
        text_answers(page)
        thinking(page)
    assert problems == []
    assert [s.get("model") for s in setups] == [TEST_MODEL, THINKING]
    text_setup, thinking_setup = setups
    assert text_setup["generation_config"] == {"response_modalities": ["TEXT"]}
    assert "output_audio_transcription" not in text_setup
    assert thinking_setup["generation_config"]["response_modalities"] == ["AUDIO"]


def record_setups(setups: list[dict[str, Any]], socket: WebSocket) -> None:
    def sent(payload: str | bytes) -> None:
        if isinstance(payload, str) and payload.startswith('{"setup"'):
            setups.append(json.loads(payload)["setup"])

    socket.on("framesent", sent)


def pick_models(page: Page) -> None:
    """The default first, then ALLOWED_MODELS sorted; Text follows the chosen model."""
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_text(
        [f"{DEFAULT_MODEL} (default)", AUDIO_ONLY, TEST_MODEL, THINKING]
    )
    expect(picker).to_have_value(DEFAULT_MODEL)
    text = page.get_by_label("Text", exact=True)
    audio = page.get_by_label("Audio", exact=True)
    expect(text).to_be_disabled()
    expect(audio).to_be_checked()

    picker.select_option(TEST_MODEL)
    expect(text).to_be_enabled()
    text.check()
    picker.select_option(AUDIO_ONLY)  # Text is no longer possible: Audio is chosen for the user
    expect(text).to_be_disabled()
    expect(audio).to_be_checked()
    expect(page.get_by_label("Voice", exact=True)).to_be_enabled()


def text_answers(page: Page) -> None:
    """The model that answers in text: a typed turn is answered in text parts."""
    page.get_by_label("Model", exact=True).select_option(TEST_MODEL)
    page.get_by_label("Text", exact=True).check()
    typed_turn(page, "hello in text")
    disconnect(page)
    # After the session the form is back, still following the chosen model.
    expect(page.get_by_label("Text", exact=True)).to_be_enabled()
    expect(page.get_by_label("Text", exact=True)).to_be_checked()


def thinking(page: Page) -> None:
    """The extended-thinking model: "thinking…" while the interaction is IN_PROGRESS."""
    page.get_by_label("Model", exact=True).select_option(THINKING)
    expect(page.get_by_label("Audio", exact=True)).to_be_checked()
    page.evaluate("() => (window.__statuses = [])")
    typed_turn(page, "think about it")
    expect(page.locator("#status")).to_have_text(LIVE)  # IDLE came
    statuses = page.evaluate("() => window.__statuses")
    assert "Live: thinking…" in statuses, statuses
    assert statuses.index("Live: thinking…") < len(statuses) - 1, statuses
    disconnect(page)


def typed_turn(page: Page, words: str) -> None:
    connect(page)
    type_message(page, words)
    model_said(page, f'You said: "{words}"')
