"""The demo page outlives a server restart, in headless Chromium: the conversation goes on.

Real processes: the emulator runs in the test (so the Gemini conversation survives the proxy), and
``liveproxy serve`` runs on a fixed port (the page's URL must not change) with an SQLite state
store. Two typed turns, then SIGTERM (``SHUTDOWN_GRACE_SECONDS=0``: the page gets ``sessionEnd``
``shutdown`` and 1001) and, once the page's retry has met a closed port, a new process on the
same port; nobody touches the page, which reconnects with its resume token (503 from the draining
process, connection refused, then the new process).

With the same store the new process continues the conversation: the same emulator session, from
the handle issued after turn 2. With a fresh store the token is unknown (404
``resume_not_found``) and the page starts a new session and says so.

The fake microphone plays silence, so the model answers the typed turns only and the turns can be
counted; its frames show the page kept the microphone (asked for once) across the sockets. Every
wait is bounded: Playwright's, or a poll of the emulator's records with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from playwright.sync_api import Browser, Page, Response, expect

from liveproxy.emulator import Emulator
from tests.browser.chromium import open_page
from tests.browser.pages import WAIT_MS, in_browser, say, shown_on_failure
from tests.browser.restart import Restart, free_port, restart_env, serve_twice, stop_all
from tests.browser.speech_wav import write_silent_wav
from tests.served import Served, eventually

pytestmark = pytest.mark.browser

KEY = "test-key-resume-page"
#: From SIGTERM to the new socket's setupComplete: the old process drains and exits, a new one
#: starts (a second or two), and the page's back-off (0.5, 1, 2, 4 s) finds it.
RECONNECT_MS = 30_000
TEST_DEADLINE = 100
KEPT = "reconnected — conversation kept"
LOST = "new session — the conversation could not be kept"

#: Records what the page does not show: each socket's close code and last text message, the
#: fetches that got no answer, and how often the page asked for the microphone. Installed before
#: the page's own scripts run.
WATCH = """
(() => {
  const sockets = (window.__sockets = []);
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const seen = { code: null, last: null };
      sockets.push(seen);
      this.addEventListener("message", (e) => typeof e.data === "string" && (seen.last = e.data));
      this.addEventListener("close", (e) => (seen.code = e.code));
    }
  };
  const fetchNative = window.fetch;
  window.__unanswered = 0; // fetches that got no answer at all (nothing listening)
  window.fetch = (...args) =>
    fetchNative(...args).catch((error) => {
      window.__unanswered += 1;
      throw error;
    });
  const media = navigator.mediaDevices;
  const ask = media.getUserMedia.bind(media);
  window.__micRequests = 0;
  media.getUserMedia = (constraints) => {
    window.__micRequests += 1;
    return ask(constraints);
  };
})();
"""


@attrs.frozen
class Seen:
    """What the page went through: its sockets ({code, last}), its api/auth answers
    ((status, request body, answer body)), the time left before and after the restart."""

    sockets: list[dict[str, Any]]
    auths: list[tuple[int, dict[str, Any], dict[str, Any]]]
    left_before: int
    left_after: int


@pytest.mark.usefixtures("chromium")
async def test_the_page_continues_its_conversation_across_a_server_restart(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    state = f"sqlite://{tmp_path}/state.db"
    seen, served = await restart_under_the_page(nursery, emulator, tmp_path, state, state, KEPT)

    first, last = emulator.connections[0], emulator.connections[-1]
    assert last.session_id == first.session_id  # the same Gemini conversation
    assert first.issued[-1].turns == 2
    assert last.resumed_handle == first.issued[-1].handle  # from the handle after turn 2
    assert last.conversation is not None
    assert last.conversation.turns == 3
    assert last.conversation.heard == ["one", "two", "three"]

    assert len(seen.sockets) == 2  # the first socket's, then the resumed one's
    assert '"reason":"shutdown"' in seen.sockets[0]["last"]
    assert seen.sockets[0]["code"] == 1001
    (status, body, _), *retried, (resumed, resume_body, granted) = seen.auths
    assert (status, resumed) == (200, 200)
    assert "resume" not in body
    assert "resume" in resume_body
    assert all(s == 503 for s, _, _ in retried), retried  # a draining server; else no answer
    # The timer goes on from the time the conversation had left, not from a new session's.
    assert granted["session_time_limit"] <= min(seen.left_before, 179)
    assert granted["session_time_limit"] - 2 <= seen.left_after <= granted["session_time_limit"]
    assert "continuing conversation" in served[1].text


@pytest.mark.usefixtures("chromium")
async def test_a_refused_resume_token_falls_back_to_a_new_session(
    nursery: trio.Nursery, emulator: Emulator, tmp_path: Path
) -> None:
    # The new process has a fresh store: the page's token is unknown there (404).
    old, new = f"sqlite://{tmp_path}/old.db", f"sqlite://{tmp_path}/new.db"
    seen, _ = await restart_under_the_page(nursery, emulator, tmp_path, old, new, LOST)

    first, last = emulator.connections[0], emulator.connections[-1]
    assert last.session_id != first.session_id
    assert last.resumed_handle is None
    assert last.conversation is not None
    assert last.conversation.heard == ["three"]

    assert len(seen.sockets) == 2
    refused = [(s, b, a) for s, b, a in seen.auths if s == 404]
    assert len(refused) == 1
    assert "resume" in refused[0][1]
    assert refused[0][2]["error"]["code"] == "resume_not_found"
    status, body, granted = seen.auths[-1]
    assert status == 200
    assert "resume" not in body  # a new session, with the page's settings
    assert granted["session_time_limit"] == 180
    assert seen.left_after >= 179  # the new session's timer


async def restart_under_the_page(
    nursery: trio.Nursery,
    emulator: Emulator,
    tmp_path: Path,
    first_state: str,
    second_state: str,
    note: str,
) -> tuple[Seen, list[Served]]:
    """Drive the page through two turns, a restart of its server (its ``STATE_URL`` first, then
    second), the page's ``note`` on reconnecting, and a third turn."""
    port = free_port()
    env = restart_env(KEY, emulator, port)
    restart = Restart()
    served: list[Served] = []
    await nursery.start(
        serve_twice,
        env | {"STATE_URL": first_state},
        env | {"STATE_URL": second_state},
        restart,
        served,
    )

    async def after_turn_two() -> bool:
        return any(handle.turns == 2 for handle in emulator.connections[0].issued)

    async def stop() -> None:
        # Once the emulator has issued the handle after turn 2, nothing of the conversation is
        # only in the proxy when it stops.
        await eventually(after_turn_two, 10)
        await restart.stop()

    wav = write_silent_wav(tmp_path / "silence.wav")
    base_url = f"http://127.0.0.1:{port}"
    steps = (partial(trio.from_thread.run, stop), partial(trio.from_thread.run, restart.start))
    seen = await in_browser(wav, partial(drive, base_url, tmp_path, steps, note), TEST_DEADLINE)
    await stop_all(served)
    return seen, served


Step = Callable[[], None]


def drive(
    base_url: str, out_dir: Path, steps: tuple[Step, Step], note: str, browser: Browser
) -> Seen:
    """The browser side: two typed turns, the server stopped and started again (``steps``), and
    a third turn once the page says ``note``. Raises AssertionError (Playwright's ``expect``)."""
    page, problems = open_page(browser, base_url, WAIT_MS)
    page.context.add_init_script(WATCH)
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if r.url.endswith("/api/auth") else None)
    page.goto(f"{base_url}/")
    with shown_on_failure(page, out_dir):
        seen = converse(page, steps, note, responses)
    assert problems == []
    return seen


def converse(
    page: Page, steps: tuple[Step, Step], note_text: str, responses: list[Response]
) -> Seen:
    expect(page.locator("#mode")).to_contain_text("Talking to Gemini")
    page.get_by_role("button", name="Connect", exact=True).click()
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "live")
    say(page, "one")
    say(page, "two")
    left_before = seconds_left(page)

    stop, start = steps
    stop()
    expect(status).to_have_attribute("data-state", "reconnecting")
    # Nothing listens on the port now: the page's next attempt is refused, and it tries again.
    page.wait_for_function("() => window.__unanswered > 0")
    start()
    note = page.locator("#transcript li.note")
    expect(note).to_have_text(note_text, timeout=RECONNECT_MS)
    expect(status).to_have_attribute("data-state", "live")
    left_after = seconds_left(page)
    frames = page.evaluate("() => window.liveproxyDemo.stats.framesSent")
    say(page, "three")
    # The microphone asked for at the start feeds the new socket (no frame is sent in between).
    page.wait_for_function(f"() => window.liveproxyDemo.stats.framesSent > {frames + 5}")
    assert page.evaluate("() => window.__micRequests") == 1

    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#ending")).to_have_text("You ended the session. (close code 1000)")
    sockets = page.evaluate("() => window.__sockets")
    auths = [(r.status, r.request.post_data_json or {}, r.json()) for r in responses]
    return Seen(sockets, auths, left_before, left_after)


def seconds_left(page: Page) -> int:
    return int(page.locator("#timer").get_attribute("data-seconds-left") or "0")
