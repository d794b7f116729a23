"""The demo's SDK page (``/demo/sdk.html``, Google's JS SDK) outlives a server restart and a
dropped socket, in headless Chromium: its own reconnection resumes the conversation with the
same token and the latest liveproxy handle (``sessionResumptionUpdate.newHandle``).

Restarts: the emulator and the proxy serving the page run in the test; the proxy the page talks
to is ``liveproxy serve`` on a fixed port (the page's ``?server=`` must not change) with an SQLite
state store and ``ALLOWED_ORIGINS`` naming the page's origin. One typed turn, the handle shown,
then SIGTERM (``SHUTDOWN_GRACE_SECONDS=0``: the SDK's socket closes 1001) and, once one of the
page's attempts has met a closed port, a new process on the same port; nobody touches the page.
With the same store the new process continues the conversation: the same emulator session, from
its latest handle, the second turn answered with the first in its context. With a fresh store
(the token unknown: 1007) or a handle kept for one second only (1008 "session not found") the
page says the conversation could not be continued, and nothing is dialled upstream.

A dropped socket: one in-process proxy behind a TCP relay that cuts the page's connection (no
close frame: 1006); the page resumes the conversation on the same process.

Every frame of every socket is recorded (Playwright's ``framesent``/``framereceived``). Every wait
is bounded: Playwright's, or a poll of the page or the emulator with a deadline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
import trio
from playwright.sync_api import Browser, Page, Request, WebSocket, expect

from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import WAIT_MS, in_browser, say, shown_on_failure
from tests.browser.restart import Restart, free_port, restart_env, serve_twice, stop_all
from tests.browser.speech_wav import write_silent_wav
from tests.browser.test_sdk_page import start_proxy
from tests.served import Served, eventually
from tests.tcp_relay import Relay

pytestmark = pytest.mark.browser

KEY = "test-key-sdk-resume-page"
#: From SIGTERM to the resumed socket's setupComplete: the old process exits, a new one starts (a
#: second or two), and the page's back-off (0.5, 1, 2, 4, 4 s) finds it.
RECONNECT_MS = 30_000
TEST_DEADLINE = 100
RECONNECTED = "reconnected with the latest resumption handle"
#: The page shows a handle's first 12 characters and an ellipsis.
SHOWN_HANDLE = re.compile(r"^[\w-]{12}\u2026$")


@attrs.define
class Socket:
    """One WebSocket the page opened: its URL and its text frames, each way, in order."""

    url: str
    sent: list[dict[str, Any]] = attrs.Factory(list)
    received: list[dict[str, Any]] = attrs.Factory(list)

    def watch(self, socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: self.sent.append(_json(payload)))
        socket.on("framereceived", lambda payload: self.received.append(_json(payload)))

    @property
    def handles(self) -> list[str]:
        """The ``newHandle`` of every ``sessionResumptionUpdate`` received."""
        return [
            m["sessionResumptionUpdate"]["newHandle"]
            for m in self.received
            if "sessionResumptionUpdate" in m
        ]

    def prompt_tokens(self) -> list[int]:
        """Each answer's ``usageMetadata.promptTokenCount``."""
        return [
            m["usageMetadata"]["promptTokenCount"] for m in self.received if "usageMetadata" in m
        ]


def _json(payload: str | bytes) -> dict[str, Any]:
    found = json.loads(payload)
    assert isinstance(found, dict)
    return found


@attrs.frozen
class Seen:
    """What the page went through: its sockets, its token requests, what it said at the end
    and the close code it showed."""

    sockets: list[Socket]
    auths: list[str]
    ending: str
    close_code: str | None


@pytest.mark.usefixtures("chromium")
async def test_the_sdk_page_resumes_its_conversation_across_a_server_restart(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    state = {"STATE_URL": f"sqlite://{tmp_path}/state.db"}
    seen, served = await restart_under_the_page(nursery, emulator, tmp_path, state, state)

    first, *failed, resumed = seen.sockets
    assert failed  # at least one attempt met the closed port, and the page tried again
    assert all(socket.sent == socket.received == [] for socket in failed)  # never opened
    assert len(seen.auths) == 1  # one token for the conversation: resuming spends no use
    assert resumed.url == first.url  # the same token
    assert first.sent[0]["setup"]["sessionResumption"] == {}
    assert first.received[:1] == [{"setupComplete": {}}]
    handle = first.handles[-1]
    # The resumed socket's first frame is its setup, resuming the latest handle the page got.
    assert resumed.sent[0]["setup"]["sessionResumption"] == {"handle": handle}
    assert resumed.handles
    assert resumed.handles[-1] != handle  # a handle is single use
    assert seen.ending.startswith("You ended the session.")  # the SDK closes with no code

    before, after = emulator.connections[0], emulator.connections[-1]
    assert after.session_id == before.session_id  # the same Gemini conversation
    assert after.resumed_handle == before.issued[-1].handle  # from its latest handle
    assert handle not in {issued.handle for issued in before.issued}  # liveproxy's, not Gemini's
    assert after.conversation is not None
    assert after.conversation.heard == ["one", "two"]
    # Turn two is answered with turn one in its context: the model's prompt grew.
    (one,) = first.prompt_tokens()
    (two,) = resumed.prompt_tokens()
    assert two > one
    assert "continuing conversation" in served[1].text


#: The page's words when the server refuses to resume its conversation.
NOT_CONTINUED = "The conversation could not be continued: the server refused to resume it."


@pytest.mark.usefixtures("chromium")
async def test_the_sdk_page_says_so_when_the_server_does_not_know_its_token(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    # The new process has a fresh store: neither the page's token nor its handle is known there.
    old, new = (
        {"STATE_URL": f"sqlite://{tmp_path}/old.db"},
        {"STATE_URL": f"sqlite://{tmp_path}/new.db"},
    )
    seen, _ = await restart_under_the_page(nursery, emulator, tmp_path, old, new)

    assert (
        seen.ending == f"{NOT_CONTINUED} Details: Missing or malformed auth token (close code 1007)"
    )
    check_refused(seen, emulator, "1007")


@pytest.mark.usefixtures("chromium")
async def test_the_sdk_page_says_so_when_the_server_does_not_know_its_handle(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    # The same store, so the token is known; but the first process kept the conversation for
    # one second only, and the page resumes later than that (see restart_under_the_page).
    state = f"sqlite://{tmp_path}/state.db"
    old = {"STATE_URL": state, "RESUME_WINDOW_SECONDS": "1"}
    seen, _ = await restart_under_the_page(nursery, emulator, tmp_path, old, {"STATE_URL": state})

    assert seen.ending == (
        f"{NOT_CONTINUED} Details: BidiGenerateContent session not found (close code 1008)"
    )
    check_refused(seen, emulator, "1008")


def check_refused(seen: Seen, emulator: Emulator, code: str) -> None:
    """The page's last socket asked for its conversation, was refused at once (``code``), and
    nothing was dialled for it."""
    assert seen.close_code == code
    first, *_, refused = seen.sockets
    assert refused.url == first.url
    assert refused.sent[0]["setup"]["sessionResumption"] == {"handle": first.handles[-1]}
    assert refused.received == []
    assert len(seen.auths) == 1
    assert len(emulator.connections) == 1


@pytest.mark.usefixtures("chromium")
async def test_the_sdk_page_resumes_its_conversation_after_its_socket_dropped(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    # One proxy process all along, behind a relay that drops the page's connection (no close
    # frame: the browser reports 1006); the page reconnects through it to the same process.
    page_server = await start_proxy(nursery, emulator)
    api = await start_proxy(nursery, emulator, allowed_origins=frozenset({page_server}))
    relay: Relay = await nursery.start(Relay(urlsplit(api).port or 0).serve)

    async def after_turn_one() -> bool:
        return any(handle.turns == 1 for handle in emulator.connections[0].issued)

    def interrupt(page: Page, sockets: list[Socket]) -> None:
        trio.from_thread.run(eventually, after_turn_one, 10)
        trio.from_thread.run_sync(relay.cut)
        expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")

    wav = write_silent_wav(tmp_path / "silence.wav")
    page_url = f"{page_server}/demo/sdk.html?server=http://127.0.0.1:{relay.port}/"
    scenario = partial(drive, page_server, page_url, tmp_path, interrupt)
    seen = await in_browser(wav, scenario, TEST_DEADLINE)

    first, resumed = seen.sockets  # the first attempt found the proxy
    assert len(seen.auths) == 1
    assert resumed.url == first.url
    assert resumed.sent[0]["setup"]["sessionResumption"] == {"handle": first.handles[-1]}
    assert seen.ending.startswith("You ended the session.")
    before, after = emulator.connections[0], emulator.connections[-1]
    assert after.session_id == before.session_id
    assert after.resumed_handle == before.issued[-1].handle
    assert after.conversation is not None
    assert after.conversation.heard == ["one", "two"]
    (one,) = first.prompt_tokens()
    (two,) = resumed.prompt_tokens()
    assert two > one


async def restart_under_the_page(
    nursery: trio.Nursery,
    emulator: Emulator,
    tmp_path: Path,
    first: dict[str, str],
    second: dict[str, str],
) -> tuple[Seen, list[Served]]:
    """Drive the page through a turn, a restart of its server (with the ``first`` settings, then
    the ``second``), its reconnection and, if it continued the conversation, a second turn.

    The second process is started once one of the page's attempts has failed after the first
    one exited: the page's next attempt comes a second or more after the conversation was
    kept."""
    page_server = await start_proxy(nursery, emulator)
    port = free_port()
    env = restart_env(KEY, emulator, port) | {"ALLOWED_ORIGINS": page_server}
    restart = Restart()
    served: list[Served] = []
    await nursery.start(serve_twice, env | first, env | second, restart, served)

    async def after_turn_one() -> bool:
        return any(handle.turns == 1 for handle in emulator.connections[0].issued)

    async def stop() -> None:
        # Once the emulator has issued the handle after turn 1, nothing of the conversation is
        # only in the proxy when it stops.
        await eventually(after_turn_one, 10)
        await restart.stop()

    def interrupt(page: Page, sockets: list[Socket]) -> None:
        trio.from_thread.run(stop)
        expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        # Nothing listens on the port now: an attempt fails, then the server starts again.
        exited = len(sockets)
        wait_until(page, lambda: len(sockets) > exited, "the page did not try again")
        trio.from_thread.run(restart.start)

    wav = write_silent_wav(tmp_path / "silence.wav")
    page_url = f"{page_server}/demo/sdk.html?server=http://127.0.0.1:{port}/"
    scenario = partial(drive, page_server, page_url, tmp_path, interrupt)
    seen = await in_browser(wav, scenario, TEST_DEADLINE)
    await stop_all(served)
    return seen, served


#: What befalls the page's socket once it holds a handle (called in the browser's thread).
Interrupt = Callable[[Page, list["Socket"]], None]


def drive(
    page_server: str, page_url: str, out_dir: Path, interrupt: Interrupt, browser: Browser
) -> Seen:
    """The browser side: a typed turn, the ``interrupt``, then a second turn if the page
    reconnected. Raises AssertionError (Playwright's ``expect``)."""
    page, problems = open_page(browser, page_server, WAIT_MS)
    sockets: list[Socket] = []
    auths: list[str] = []

    def opened(socket: WebSocket) -> None:
        sockets.append(Socket(socket.url))
        sockets[-1].watch(socket)

    def requested(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/auth"):
            auths.append(request.url)

    page.on("websocket", opened)
    page.on("request", requested)
    page.goto(page_url)
    with shown_on_failure(page, out_dir):
        ending = converse(page, sockets, interrupt)
    assert problems == []
    close_code = page.locator("#ending").get_attribute("data-close-code")
    return Seen(sockets, auths, ending, close_code)


def converse(page: Page, sockets: list[Socket], interrupt: Interrupt) -> str:
    """The page's part; returns what it says at its end."""
    expect(page.locator("#mode")).to_contain_text("Server: http://127.0.0.1:")
    page.get_by_label("Text", exact=True).check()
    page.get_by_role("button", name="Connect", exact=True).click()
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "live")
    say(page, "one")
    expect(page.locator("#handle")).to_have_text(SHOWN_HANDLE)  # the page holds a handle

    interrupt(page, sockets)
    ending = page.locator("#ending")
    back_or_ended = re.compile(r"^(live|ended)$")
    expect(status).to_have_attribute("data-state", back_or_ended, timeout=RECONNECT_MS)
    if status.get_attribute("data-state") == "ended":
        expect(page.get_by_role("button", name="Connect", exact=True)).to_be_enabled()
        expect(page.locator("#transcript li.note")).to_have_count(0)
        return ending.inner_text()
    expect(page.locator("#transcript li.note")).to_have_text([RECONNECTED])
    assert page.evaluate("window.liveproxySdk.stats.reconnects") == 1
    say(page, "two")
    page.get_by_role("button", name="Disconnect").click()
    expect(status).to_have_attribute("data-state", "ended")
    return ending.inner_text()


def wait_until(page: Page, done: Any, failure: str) -> None:
    """Poll ``done()`` on the page's clock (not sleeping here) for up to 15 seconds."""
    for _ in range(150):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError(failure)
