"""The upstream side of a session: its connections, one after another, and what they say.

The relay connects once the setup is known, relays every upstream message to the browser queue
(translated: audio parts become binary frames), and moves the session to a new connection on a
``goAway`` (at a turn boundary, with a fresh handle) or after a drop, with back-off. *When* to
switch, resume or give up is decided by its :class:`~liveproxy.core.course.Course` (sync); the
relay moves the bytes and runs the timers the course asks for.

Connections live in a nursery the session lends (``connections``), outside the session's race:
when the race is decided and the relay cancelled, the connection it holds is still open, and the
session closes it with the code the outcome implies (:meth:`Relay.close`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from liveproxy.contract.endings import Outcome
from liveproxy.contract.errors import UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from liveproxy.contract.translate import (
    AudioAligner,
    UpstreamDecodeError,
    UpstreamEvent,
    translate_upstream,
    with_session_stats,
)
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.course import Course
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import Upstream, UpstreamClosed, UpstreamConnection
from liveproxy.core.stats import Gauges, SessionCounters
from liveproxy.protocol import closes

STATUS_RECONNECTING: Final = '{"sessionStatus":{"state":"reconnecting"}}'
STATUS_RESUMED: Final = '{"sessionStatus":{"state":"resumed"}}'
#: How long a detach may wait for a browser message stuck in a write to a connection that
#: stopped reading; then the connection is dropped under it.
DETACH_TIMEOUT: Final = 1.0

Setup = dict[str, Any]


@attrs.frozen
class Switch:
    """``goAway`` came and a resumable handle is held: move to a new connection."""


SWITCH: Final = Switch()
ConnectionEnd = Switch | UpstreamClosed


class Relay:
    """Upstream connections for one session, and the upstream -> browser direction.

    ``setups`` gives the session's setup (once); ``on_ready`` is called when the first
    connection's ``setupComplete`` has been queued for the browser.
    """

    def __init__(
        self,
        upstream: Upstream | None,
        connections: trio.Nursery,
        *,
        setups: trio.MemoryReceiveChannel[Setup],
        link: UpstreamLink,
        out: BrowserQueue,
        counters: SessionCounters,
        course: Course,
        gauges: Gauges,
        setup_timeout: float,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self._upstream = upstream
        self._connections = connections
        self._setups = setups
        self.link = link
        self.out = out
        self.counters = counters
        self.course = course
        self._gauges = gauges
        self._setup_timeout = setup_timeout
        self._on_ready = on_ready
        self.audio_out = AudioAligner()
        #: The session's setup, once the browser's first frame decided it.
        self.setup: Setup | None = None
        #: The connection in use (closed by :meth:`close` when the session is over).
        self.connection: UpstreamConnection | None = None

    async def run(self) -> Outcome | None:
        """Connect once the setup is known, relay, and resume on goAway or drops as told.

        Returns ``upstream_closed`` when Gemini ends the session, None when no setup came (the
        browser left first).

        Raises:
            UpstreamUnavailable: no upstream is configured, or the first connection failed.
            UpstreamRejected: the first connection was refused.
            UpstreamFailed: a drop could not be resumed, or upstream sent what is not JSON.
            SlowClient: the browser's queue overflowed.
        """
        try:
            self.setup = await self._setups.receive()
        except trio.EndOfChannel:
            return None
        if self._upstream is None:
            raise UpstreamUnavailable(
                "no upstream is configured (set GOOGLE_API_KEY, PROJECT_ID or UPSTREAM_URL)"
            )
        end = await self._connect_and_relay(resumed=self.course.handle is not None, first=True)
        while True:
            if isinstance(end, UpstreamClosed):
                ending = self.course.closed(end.code, end.reason)
                if ending is not None:
                    return ending
                self.link.replay_after_drop()
            else:
                self.link.replay_after_switch()
            self.out.put(STATUS_RECONNECTING)
            end = await self._resume()

    async def close(self, code: int) -> None:
        """Close the connection in use, if any, with ``code`` (call once the relay is done)."""
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.aclose(code)

    async def _resume(self) -> ConnectionEnd:
        """Reconnect with the latest handle, with the course's back-off.

        Raises:
            UpstreamFailed: the handle was refused, or every attempt failed.
        """
        while (delay := self.course.next_attempt()) is not None:
            await trio.sleep(delay)
            try:
                return await self._connect_and_relay(resumed=True, first=False)
            except (UpstreamRejected, UpstreamUnavailable) as exc:
                self.course.attempt_failed(exc)
        raise self.course.gave_up()

    async def _connect_and_relay(self, *, resumed: bool, first: bool) -> ConnectionEnd:
        """Open one connection (resuming the handle if ``resumed``) and relay until it ends; the
        connection is closed on return.

        The ``first`` connection of this socket answers the browser's setup (``setupComplete``,
        also when it continues a resumed conversation); a later one says ``resumed``.
        """
        connection = await self._connect(self.course.handle if resumed else None)
        self.course.connected()
        if first:
            self.out.put(connection.setup_complete)
            self.counters.setup_completed()
            self._on_ready()
        else:
            self.counters.reconnects += 1
            self._gauges.reconnects += 1
            self.out.put(STATUS_RESUMED)
        end = await self._relay(connection)
        await self.close(closes.NORMAL)
        return end

    async def _connect(self, handle: str | None) -> UpstreamConnection:
        """A new connection, made the one in use, within the setup timeout.

        Raises:
            UpstreamUnavailable: too slow, or as :meth:`Upstream.connect` raises.
            UpstreamRejected, UpstreamFailed: as :meth:`Upstream.connect` raises.
        """
        assert self._upstream is not None
        assert self.setup is not None
        try:
            with trio.fail_after(self._setup_timeout):
                connection = await self._upstream.connect(self._connections, self.setup, handle)
        except trio.TooSlowError:
            raise UpstreamUnavailable("upstream did not complete the setup in time") from None
        self.connection = connection
        return connection

    async def _relay(self, connection: UpstreamConnection) -> ConnectionEnd:
        """Attach ``connection`` to the link and read it until it ends or the course switches;
        the link is detached on return (the connection dropped under a browser message stuck
        writing to it)."""
        try:
            await self.link.attach(connection)
        except UpstreamClosed as closed:
            return closed
        end = await self._read(connection)
        with trio.move_on_after(DETACH_TIMEOUT) as detaching:
            await self.link.detach()
        if detaching.cancelled_caught:
            # A browser message is stuck in a write to a connection that stopped reading:
            # dropping it fails that write, and the message stays queued for the next one.
            await connection.abort()
            await self.link.detach()
        return end

    async def _read(self, connection: UpstreamConnection) -> ConnectionEnd:
        """Read and apply upstream messages until the connection closes or the course switches.

        Raises:
            UpstreamFailed: a message that is not JSON, or whose audio is corrupt.
            SlowClient: the browser's queue overflowed.
        """
        course = self.course
        while True:
            try:
                if course.switch_at == math.inf:
                    raw = await connection.receive()
                else:
                    with trio.move_on_at(course.switch_at) as wait:
                        raw = await connection.receive()
                    if wait.cancelled_caught:
                        if course.deadline_reached():
                            return SWITCH
                        continue
            except UpstreamClosed as closed:
                return closed
            try:
                event = translate_upstream(raw, self.audio_out)
            except UpstreamDecodeError as exc:
                raise UpstreamFailed(str(exc)) from None
            self._apply(event)
            if course.on_event(event, trio.current_time()):
                return SWITCH

    def _apply(self, event: UpstreamEvent) -> None:
        """Count ``event`` and queue its frames for the browser.

        Raises:
            UpstreamFailed: a ``toolCall`` nested deeper than JSON can be written.
            SlowClient: the browser's queue overflowed.
        """
        self.counters.message_count += 1
        if event.interrupted:
            self.out.drop_audio()
        if event.usage is not None:
            self.counters.note_usage(event.usage)
        if event.resumption_handle is not None:
            self.link.handle_received(event.consumed_index)
        for frame in event.frames:
            self.out.put(frame)
        if event.tool_call is not None:
            stats = self.counters.tool_call_stats()
            try:
                self.out.put(with_session_stats(event.tool_call, stats))
            except UpstreamDecodeError as exc:
                raise UpstreamFailed(str(exc)) from None
