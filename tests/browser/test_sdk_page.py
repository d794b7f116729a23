"""The demo's SDK page (``/demo/sdk.html``) in headless Chromium: Google's own JS SDK
(``@google/genai``, the copy bundled in ``liveproxy/static/vendor/``) holding a conversation
through liveproxy's Gemini-native endpoint with an ephemeral token the page mints itself.

One liveproxy serves the page (its origin is the page's); the page talks to another, whose
``ALLOWED_ORIGINS`` names the first, through ``?server=``; both relay to the emulator. Every
request the browser makes is recorded: none leaves the two origins (no CDN).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from playwright.sync_api import Browser, Page, expect

from liveproxy.config import BotCheckSettings
from liveproxy.emulator import Emulator, Faults
from tests.browser import pages
from tests.browser.chromium import open_page
from tests.browser.pages import (
    ELSEWHERE,
    WAIT_MS,
    in_browser,
    model_said,
    type_message,
)
from tests.browser.speech_wav import write_silent_wav, write_speech_wav
from tests.models import TEST_MODEL

pytestmark = pytest.mark.browser

#: The socket the SDK opens: Google's path after the double slash it writes, the token in the query.
SDK_SOCKET = re.compile(
    r"^ws://127\.0\.0\.1:\d+//ws/google\.ai\.generativelanguage\.v1alpha\.GenerativeService\."
    r"BidiGenerateContentConstrained\?access_token=auth_tokens/[\w-]+$"
)


class Servers:
    """The emulator, the proxy serving the page and the proxy the page talks to."""

    def __init__(self, emulator: Emulator, page_server: str, api: str) -> None:
        self.emulator = emulator
        self.page_server = page_server
        self.api = api

    @property
    def page_url(self) -> str:
        return f"{self.page_server}/demo/sdk.html?server={self.api}/"


async def start_proxy(nursery: trio.Nursery, emulator: Emulator, **settings: object) -> str:
    """A liveproxy on the test's model in front of ``emulator``; its URL."""
    return await pages.start_proxy(nursery, emulator, model=TEST_MODEL, **settings)


async def start_servers(nursery: trio.Nursery, emulator: Emulator) -> Servers:
    page_server = await start_proxy(nursery, emulator)
    api = await start_proxy(nursery, emulator, allowed_origins=frozenset({page_server}))
    return Servers(emulator, page_server, api)


def open_watched(browser: Browser, origin: str) -> tuple[Page, list[str], list[str]]:
    """A page on ``origin`` (see :func:`open_page`), its uncaught errors and the URL of every
    socket it opens."""
    page, problems = open_page(browser, origin, WAIT_MS)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    return page, problems, sockets


def connect(page: Page, servers: Servers, modality: str) -> None:
    page.goto(servers.page_url)
    expect(page.locator("#mode")).to_contain_text(f"Server: {servers.api}")
    page.get_by_label(modality, exact=True).check()
    pages.connect(page)


def stat(page: Page, name: str) -> int:
    value = page.evaluate(f"window.liveproxySdk.stats.{name}")
    assert isinstance(value, int)
    return value


def disconnect(page: Page) -> None:
    pages.disconnect(page)
    expect(page.locator("#ending")).to_contain_text("You ended the session.")


@pytest.mark.usefixtures("chromium")
async def test_text_both_ways_and_a_tool_call_answered_by_the_page(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    servers = await start_servers(nursery, emulator)

    def scenario(browser: Browser) -> None:
        page, problems, sockets = open_watched(browser, servers.page_server)
        connect(page, servers, "Text")
        type_message(page, "hello from the SDK")
        model_said(page, 'You said: "hello from the SDK"')
        type_message(page, 'call get_weather {"location": "Tokyo"}')
        answered = page.locator("#tool-log li[data-kind='answered']")
        expect(answered).to_contain_text('get_weather({"location":"Tokyo"})')
        model_said(page, 'get_weather returned {"location":"Tokyo","forecast":"sunny"')
        disconnect(page)
        assert problems == []
        (socket,) = sockets
        assert SDK_SOCKET.match(socket), socket
        assert socket.startswith(servers.api.replace("http", "ws", 1))

    await in_browser(write_silent_wav(tmp_path / "silence.wav"), scenario)
    (record,) = servers.emulator.connections
    assert record.model == f"models/{TEST_MODEL}"
    kinds = [kind for kind, _ in record.received if kind != "realtimeInput"]
    assert kinds == ["clientContent", "clientContent", "toolResponse"]
    response = next(body for kind, body in record.received if kind == "toolResponse")
    (answer,) = response["functionResponses"]
    assert answer["name"] == "get_weather"
    assert answer["response"]["canned"] is True


@pytest.mark.usefixtures("chromium")
async def test_audio_both_ways(nursery: trio.Nursery, emulator: Emulator, tmp_path: Path) -> None:
    servers = await start_servers(nursery, emulator)
    wav = write_speech_wav(tmp_path / "speech.wav")

    def scenario(browser: Browser) -> None:
        page, problems = open_page(browser, servers.page_server, WAIT_MS)
        connect(page, servers, "Audio")
        # The fake microphone's first utterance, heard and transcribed by the emulator ...
        heard = page.locator("#transcript li[data-speaker='user']")
        expect(heard.filter(has_text=re.compile(r"\[speech \d\.\d\d s\]"))).not_to_have_count(0)
        # ... answered in speech, its transcript shown and its audio played.
        model_said(page, "You said: [speech")
        page.wait_for_function("window.liveproxySdk.stats.samplesPlayed > 2400")
        assert stat(page, "framesSent") > 5
        assert stat(page, "chunksReceived") > 0
        assert stat(page, "bytesReceived") >= 2 * stat(page, "chunksReceived")
        disconnect(page)
        assert problems == []

    await in_browser(wav.path, scenario)
    (record,) = servers.emulator.connections
    audio = [
        chunk
        for kind, body in record.received
        if kind == "realtimeInput"
        for chunk in [body.get("audio")]
        if chunk is not None
    ]
    assert audio
    assert {chunk["mimeType"] for chunk in audio} == {"audio/pcm;rate=16000"}


@pytest.mark.usefixtures("chromium")
async def test_a_go_away_switch_goes_unnoticed_by_the_sdk(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    servers = await start_servers(nursery, emulator)
    servers.emulator.queue_faults(Faults(go_away_after=1))

    def scenario(browser: Browser) -> None:
        page, problems, sockets = open_watched(browser, servers.page_server)
        connect(page, servers, "Text")
        type_message(page, "one")
        model_said(page, 'You said: "one"')
        wait_for_switch(page, servers)
        type_message(page, "two")
        model_said(page, 'You said: "two"')
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        assert stat(page, "reconnects") == 0
        assert page.locator("#notice").is_hidden()  # no goAway reached the page
        disconnect(page)
        assert problems == []
        assert len(sockets) == 1  # one socket, all along

    await in_browser(write_silent_wav(tmp_path / "silence.wav"), scenario)
    first, second = servers.emulator.connections
    assert second.resumed_handle is not None  # the same conversation, on a new connection
    texts = [
        body["turns"][0]["parts"][0]["text"]
        for record in (first, second)
        for kind, body in record.received
        if kind == "clientContent"
    ]
    assert texts == ["one", "two"]


def wait_for_switch(page: Page, servers: Servers) -> None:
    """Wait (polling the page's clock, not sleeping here) until the proxy moved upstream."""
    connections = servers.emulator.connections
    for _ in range(150):
        if len(connections) >= 2 and connections[0].close_code is not None:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the proxy did not switch connections")


@pytest.mark.usefixtures("chromium")
async def test_the_page_needs_no_network_but_the_proxy(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    servers = await start_servers(nursery, emulator)
    ours = {urlsplit(servers.page_server).netloc, urlsplit(servers.api).netloc}

    def scenario(browser: Browser) -> None:
        page, problems = open_page(browser, servers.page_server, WAIT_MS)
        requested: list[str] = []
        page.context.on("request", lambda request: requested.append(request.url))
        page.on("websocket", lambda socket: requested.append(socket.url))
        # Anything else is refused, so a page that needed a CDN would fail here too.
        page.context.route(
            re.compile(r"^https?://"),
            lambda route: (
                route.continue_()
                if urlsplit(route.request.url).netloc in ours
                else route.abort("blockedbyclient")
            ),
        )
        connect(page, servers, "Text")
        type_message(page, "offline")
        model_said(page, 'You said: "offline"')
        disconnect(page)
        assert problems == []
        hosts = {urlsplit(url).netloc for url in requested if not url.startswith("data:")}
        assert hosts == ours
        paths = {urlsplit(url).path for url in requested}
        assert "/demo/vendor/genai.mjs" in paths

    await in_browser(write_silent_wav(tmp_path / "silence.wav"), scenario)


@pytest.mark.usefixtures("chromium")
async def test_a_server_refusing_the_pages_origin_or_asking_a_bot_check_gets_no_socket(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    page_server = await start_proxy(nursery, emulator)
    refusing = await start_proxy(nursery, emulator, allowed_origins=frozenset({ELSEWHERE}))
    guarded = await start_proxy(
        nursery,
        emulator,
        allowed_origins=frozenset({page_server}),
        bot_check=BotCheckSettings(provider="turnstile", secret="s", site_key="site"),
    )

    def scenario(browser: Browser) -> None:
        page, problems, sockets = open_watched(browser, page_server)
        page.goto(f"{page_server}/demo/sdk.html?server={refusing}/")
        expect(page.locator("#mode")).to_have_text("The server did not answer; is it running?")
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.locator("#ending")).to_contain_text(
            f"does not allow this page's origin ({page_server}; see ALLOWED_ORIGINS)"
        )
        expect(page.locator("#status")).to_have_attribute("data-state", "ended")
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
        page.goto(f"{page_server}/demo/sdk.html?server={guarded}/")
        expect(page.locator("#notice")).to_contain_text("requires a bot check (turnstile)")
        page.get_by_role("button", name="Connect", exact=True).click()
        expect(page.locator("#ending")).to_contain_text("requires a bot check (turnstile)")
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
        assert sockets == []  # no token, no socket
        assert problems == []

    await in_browser(write_silent_wav(tmp_path / "silence.wav"), scenario)
    assert emulator.connections == []
