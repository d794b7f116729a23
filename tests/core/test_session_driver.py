"""The session's driver over memory channels: no Hypercorn, no sockets, trio's autojump clock.

The browser and Gemini are fakes of the two ports (:mod:`liveproxy.core.ports`); what only real
sockets can show stays in the end-to-end tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from liveproxy.config import Config
from liveproxy.contract.endings import BROWSER_CLOSED, SHUTDOWN, TIME_LIMIT, Outcome
from liveproxy.contract.errors import SessionError, SlowClient, UpstreamFailed, UpstreamUnavailable
from liveproxy.contract.session_setup import upstream_setup_message
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.course import DRAIN_QUIET
from liveproxy.core.ports import BrowserGone, Frame, ServerTools, UpstreamClosed
from liveproxy.core.resumable import Resumable
from liveproxy.core.services import SessionLimits, SessionServices
from liveproxy.core.session import Session
from liveproxy.core.stats import Gauges
from liveproxy.protocol import closes
from tests.models import TEST_MODEL

SETUP = orjson.dumps({"setup": {"generation_config": {"response_modalities": ["TEXT"]}}}).decode()
HANDLE = '{"sessionResumptionUpdate":{"newHandle":"%s","resumable":true}}'


@attrs.define(eq=False)
class FakeBrowser:
    """The browser port: the test feeds ``incoming``; what the session sends is in ``sent``."""

    incoming: trio.MemoryReceiveChannel[Frame]
    sent: list[Frame] = attrs.Factory(list)
    closed_with: tuple[int, str] | None = None
    stuck: bool = False  # a browser that stopped reading: every send blocks

    async def receive(self) -> Frame:
        try:
            return await self.incoming.receive()
        except trio.EndOfChannel:
            raise BrowserGone() from None

    async def send(self, frame: Frame) -> None:
        if self.stuck:
            await trio.sleep_forever()
        self.sent.append(frame)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)

    def events(self) -> list[dict[str, object]]:
        return [orjson.loads(f) for f in self.sent if isinstance(f, str)]


@attrs.define(eq=False)
class FakeSocket:
    """One upstream connection: the test pushes Gemini's messages or a close into it."""

    setup: str
    to_proxy_send: trio.MemorySendChannel[str | UpstreamClosed]
    to_proxy: trio.MemoryReceiveChannel[str | UpstreamClosed]
    gauges: Gauges
    close_codes: list[int]
    received: list[bytes | str] = attrs.Factory(list)
    closed: bool = False
    closed_event: trio.Event = attrs.Factory(trio.Event)
    setup_complete: str = '{"setupComplete":{}}'

    async def receive(self) -> bytes | str:
        item = await self.to_proxy.receive()
        if isinstance(item, UpstreamClosed):
            raise item
        return item

    async def send(self, message: str) -> None:
        self.received.append(message)

    async def aclose(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            self.closed_event.set()
            self.close_codes.append(code)
            self.gauges.upstream_opened(-1)

    async def abort(self) -> None:
        pass


@attrs.define(eq=False)
class FakeGemini:
    """The upstream port: opens :class:`FakeSocket`\\ s, or fails as ``plans`` say."""

    gauges: Gauges
    plans: deque[SessionError] = attrs.Factory(deque)
    sockets: list[FakeSocket] = attrs.Factory(list)
    close_codes: list[int] = attrs.Factory(list)
    attempts: list[float] = attrs.Factory(list)
    transparent: bool = False
    #: While set, a connection attempt waits for it (a slow setup).
    hold: trio.Event | None = None
    _opened: trio.Event = attrs.Factory(trio.Event)

    async def connect(
        self, nursery: trio.Nursery, setup: dict[str, Any], handle: str | None
    ) -> FakeSocket:
        self.attempts.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.hold is not None:
            await self.hold.wait()
        if self.plans:
            raise self.plans.popleft()
        send, receive = trio.open_memory_channel[str | UpstreamClosed](16)
        message = upstream_setup_message(setup, f"models/{setup['model']}", handle)
        socket = FakeSocket(message, send, receive, self.gauges, self.close_codes)
        self.sockets.append(socket)
        self._opened.set()
        self._opened = trio.Event()
        self.gauges.upstream_opened(1)
        return socket

    async def wait_for(self, count: int) -> FakeSocket:
        while len(self.sockets) < count:
            await self._opened.wait()
        return self.sockets[count - 1]


@attrs.define(eq=False)
class Run:
    browser: FakeBrowser
    to_session: trio.MemorySendChannel[Frame]
    gemini: FakeGemini
    services: SessionServices
    session: Session
    outcome: Outcome | None = None
    done: trio.Event = attrs.Factory(trio.Event)


@asynccontextmanager
async def running(
    *,
    time_limit: float = 600,
    stuck: bool = False,
    resumed: Resumable | None = None,
    resume_token: str | None = None,
    tools: ServerTools | None = None,
    **settings: object,
) -> AsyncIterator[Run]:
    """A session between a fake browser and fake Gemini; its outcome is set when it ends."""
    settings.setdefault("model", TEST_MODEL)
    config = Config(api_key="k", upstream_ping_interval_seconds=0, **settings)  # type: ignore[arg-type]
    gauges = Gauges()
    gemini = FakeGemini(gauges)
    services = SessionServices(
        limits=SessionLimits.from_config(config),
        upstream=gemini,
        gauges=gauges,
        shutdown_now=trio.Event(),
    )
    to_session, incoming = trio.open_memory_channel[Frame](16)
    browser = FakeBrowser(incoming, stuck=stuck)
    queue = BrowserQueue(config.browser_queue_bytes)
    session = Session(
        browser,
        queue,
        services,
        time_limit=time_limit,
        resumed=resumed,
        resume_token=resume_token,
        tools=tools,
    )
    run = Run(browser, to_session, gemini, services, session)

    async def drive() -> None:
        async with trio.open_nursery() as writers:
            writers.start_soon(queue.run_writer, browser)
            run.outcome = await session.run()
            queue.finish(None, closes.NORMAL)
            if stuck:
                writers.cancel_scope.cancel()
        run.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive)
        await to_session.send(SETUP)
        yield run
        with trio.fail_after(time_limit + 60):
            await run.done.wait()
    assert services.gauges.upstream_connections == 0  # nothing outlives the session


async def test_goaway_switches_to_a_new_connection_with_the_handle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(HANDLE % "h1")
        await first.to_proxy_send.send('{"goAway":{"timeLeft":"20s"}}')
        second = await run.gemini.wait_for(2)
        assert orjson.loads(second.setup)["setup"]["sessionResumption"] == {"handle": "h1"}
        await trio.testing.wait_all_tasks_blocked()  # the browser's input moves to it
        await run.to_session.send('{"type": "text", "text": "after"}')
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert run.outcome == BROWSER_CLOSED
    assert first.closed
    assert second.closed
    assert [e for e in run.browser.events() if "sessionStatus" in e] == [
        {"sessionStatus": {"state": "reconnecting"}},
        {"sessionStatus": {"state": "resumed"}},
    ]
    assert any("after" in str(m) for m in second.received)


async def test_a_drop_resumes_after_back_off_and_replays_the_turns_since_the_handle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(reconnect_attempts=3) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(HANDLE % "h1")
        await run.to_session.send('{"type": "text", "text": "not covered by h1"}')
        await trio.testing.wait_all_tasks_blocked()
        run.gemini.plans.extend([UpstreamUnavailable("down"), UpstreamUnavailable("down")])
        dropped_at = trio.current_time()
        await first.to_proxy_send.send(UpstreamClosed(1011, "Internal error encountered."))
        second = await run.gemini.wait_for(2)
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert [round(t - dropped_at, 3) for t in run.gemini.attempts[1:]] == [0.0, 0.5, 1.5]
    assert any("not covered by h1" in str(m) for m in second.received)
    assert run.outcome == BROWSER_CLOSED


async def test_a_drop_whose_every_resume_fails_is_upstream_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(reconnect_attempts=2) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(HANDLE % "h1")
        run.gemini.plans.extend([UpstreamUnavailable("down")] * 2)
        await first.to_proxy_send.send(UpstreamClosed(1006, ""))
    assert isinstance(run.outcome, UpstreamFailed)
    assert run.outcome.message == "the session could not be resumed after 2 attempts: down"


async def test_a_drop_before_any_handle_is_upstream_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(UpstreamClosed(1011, "Internal error encountered."))
    assert isinstance(run.outcome, UpstreamFailed)
    assert len(run.gemini.attempts) == 1


async def test_shutdown_ends_the_session_and_closes_upstream_going_away(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as run:
        await run.gemini.wait_for(1)
        run.services.shutdown_now.set()
    assert run.outcome == SHUTDOWN
    assert run.gemini.close_codes == [closes.GOING_AWAY]


async def test_the_time_limit_ends_the_session_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    async with running(time_limit=60) as run:
        await run.gemini.wait_for(1)
    assert run.outcome == TIME_LIMIT
    assert trio.current_time() - start == pytest.approx(60, abs=0.01)


async def test_a_browser_that_stopped_reading_is_slow_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(stuck=True, browser_queue_bytes=4096) as run:
        first = await run.gemini.wait_for(1)
        text = orjson.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "x" * 1000}]}}})
        for _ in range(10):
            await first.to_proxy_send.send(text.decode())
    assert isinstance(run.outcome, SlowClient)


def texts(browser: FakeBrowser) -> list[str]:
    """The model's text parts the browser got, in order."""
    return [
        part["text"]
        for event in browser.events()
        for part in event.get("serverContent", {}).get("modelTurn", {}).get("parts", [])  # type: ignore[attr-defined]
    ]


def model_text(text: str) -> str:
    return orjson.dumps({"serverContent": {"modelTurn": {"parts": [{"text": text}]}}}).decode()


TURN_COMPLETE = '{"serverContent":{"turnComplete":true}}'


async def test_a_switch_makes_the_new_connection_before_it_breaks_the_old(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as run:
        first = await run.gemini.wait_for(1)
        run.gemini.hold = trio.Event()  # the new connection's setup takes a while
        await first.to_proxy_send.send(HANDLE % "h1")
        await first.to_proxy_send.send('{"goAway":{"timeLeft":"20s"}}')
        await trio.testing.wait_all_tasks_blocked()
        assert run.gemini.attempts[1:]  # opening beside the old one, which serves on:
        await run.to_session.send('{"type": "text", "text": "while opening"}')
        await first.to_proxy_send.send(model_text("old: answer"))  # a turn it started
        await trio.testing.wait_all_tasks_blocked()
        assert any("while opening" in str(m) for m in first.received)
        assert texts(run.browser) == ["old: answer"]

        run.gemini.hold.set()
        second = await run.gemini.wait_for(2)
        await trio.testing.wait_all_tasks_blocked()
        assert orjson.loads(second.setup)["setup"]["sessionResumption"] == {"handle": "h1"}
        await run.to_session.send('{"type": "text", "text": "after the move"}')
        await second.to_proxy_send.send(model_text("new: first"))  # waits behind the old's turn
        await first.to_proxy_send.send(model_text("old: rest"))
        await trio.testing.wait_all_tasks_blocked()
        assert not first.closed_event.is_set()  # it still owes the end of its turn
        assert any("after the move" in str(m) for m in second.received)
        assert not any("after the move" in str(m) for m in first.received)
        await first.to_proxy_send.send(TURN_COMPLETE)
        turn_ended = trio.current_time()
        await first.closed_event.wait()  # once it has said nothing more for a while
        assert trio.current_time() - turn_ended == pytest.approx(DRAIN_QUIET, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert texts(run.browser) == ["old: answer", "old: rest", "new: first"]
    assert run.gemini.close_codes[0] == closes.NORMAL
    assert [e for e in run.browser.events() if "sessionStatus" in e] == [
        {"sessionStatus": {"state": "reconnecting"}},
        {"sessionStatus": {"state": "resumed"}},
    ]


async def test_an_old_connection_that_never_finishes_its_turn_is_closed_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running() as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(HANDLE % "h1")
        await first.to_proxy_send.send(model_text("a long turn"))
        go_away_at = trio.current_time()
        await first.to_proxy_send.send('{"goAway":{"timeLeft":"20s"}}')
        second = await run.gemini.wait_for(2)  # at 15 s: the switch could wait no longer
        assert trio.current_time() - go_away_at == pytest.approx(15.0, abs=0.01)
        await second.to_proxy_send.send(model_text("new"))
        await trio.testing.wait_all_tasks_blocked()
        assert texts(run.browser) == ["a long turn"]  # the old still owes its turn
        await first.closed_event.wait()  # at its goAway's end, and a second more
        assert trio.current_time() - go_away_at == pytest.approx(21.0, abs=0.01)
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert texts(run.browser) == ["a long turn", "new"]


async def test_when_no_new_connection_opens_the_old_one_serves_until_it_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(reconnect_attempts=2) as run:
        first = await run.gemini.wait_for(1)
        run.gemini.plans.extend([UpstreamUnavailable("refused while the old is open")] * 2)
        await first.to_proxy_send.send(HANDLE % "h1")
        await first.to_proxy_send.send('{"goAway":{"timeLeft":"20s"}}')
        await trio.sleep(5)  # both attempts failed beside it
        await first.to_proxy_send.send(model_text("still here"))
        await trio.testing.wait_all_tasks_blocked()
        assert not first.closed_event.is_set()
        await first.to_proxy_send.send(UpstreamClosed(1011, "Deadline expired"))
        second = await run.gemini.wait_for(2)  # the close is resumed, as any drop
        await second.to_proxy_send.send(model_text("resumed"))
        await trio.testing.wait_all_tasks_blocked()
        run.to_session.close()
    assert run.outcome == BROWSER_CLOSED
    assert texts(run.browser) == ["still here", "resumed"]
