"""The upstream side of a session: its connections, one after another, and what they say.

The relay connects once the setup is known, relays every upstream message to the browser queue
(translated: audio parts become binary frames), and moves the session to a new connection on a
``goAway`` (at a turn boundary, with a fresh handle) or after a drop, with back-off. *When* to
switch, resume or give up is decided by its :class:`~liveproxy.core.course.Course` (sync); the
relay moves the bytes and runs the timers the course asks for.

A ``goAway`` switch is made before the old connection is broken:

1. the new connection is opened with the latest handle, while the old one keeps serving (read
   and relayed as before, the browser's input still going to it);
2. the browser's input moves to the new connection at one point (the link detaches from the
   old and attaches to the new, sending first what the handle does not cover);
3. the old connection is read on until it owes nothing (no turn of its own is under way and it
   has been quiet for a second), or it closes, or its ``goAway`` deadline passes; all of that
   reaches the browser before anything from the new connection, which is not read meanwhile:
   what it sends waits in trio-websocket's queue of a few messages, then in its TCP window
   (Gemini's writes wait). With transparent resumption the old connection is not drained:
   the new one was given everything the old consumed after the handle, and answers it;
4. the old connection is closed (1000), and the new one is read.

When no new connection can be opened beside the old one (every attempt failed), the old serves
on until it closes, and that close is resumed like any drop.

Connections live in a nursery the session lends (``connections``), outside the session's race:
when the race is decided and the relay cancelled, the connections it holds are still open, and
the session closes them with the code the outcome implies (:meth:`Relay.close`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import trio

from liveproxy.contract.endings import Outcome
from liveproxy.contract.errors import UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from liveproxy.contract.translate import (
    AudioAligner,
    UpstreamDecodeError,
    UpstreamEvent,
    translate_upstream,
    translate_upstream_native,
    with_session_stats,
)
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.course import Course, Drain
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import Upstream, UpstreamClosed, UpstreamConnection
from liveproxy.core.stats import Gauges, SessionCounters
from liveproxy.core.tool_calls import ToolCalls
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


@attrs.frozen
class Drained:
    """An old connection owes nothing more (or its deadline passed)."""


SWITCH: Final = Switch()
DRAINED: Final = Drained()
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
        tools: ToolCalls | None = None,
        native: bool = False,
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
        #: The server's tool calls (None: every call goes to the browser).
        self.tools = tools
        #: A Gemini-native client: messages passed on as Gemini sent them, no ``sessionStatus``
        #: (see :func:`~liveproxy.contract.translate.translate_upstream_native`).
        self.native = native
        self.audio_out = AudioAligner()
        #: The session's setup, once the browser's first frame decided it.
        self.setup: Setup | None = None
        #: The connection in use, and one beside it during a switch (the new one being opened,
        #: or the old one draining): :meth:`close` closes both when the session is over.
        self.connection: UpstreamConnection | None = None
        self.beside: UpstreamConnection | None = None
        #: The connection whose usage reports are being metered (read last).
        self._metered: UpstreamConnection | None = None

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
            ending = self.course.closed(end.code, end.reason)
            if ending is not None:
                return ending
            self.link.replay_after_drop()
            self._status(STATUS_RECONNECTING)
            end = await self._resume()

    async def close(self, code: int) -> None:
        """Close the connections held, if any, with ``code`` (call once the relay is done)."""
        connection, self.connection = self.connection, None
        beside, self.beside = self.beside, None
        try:
            if beside is not None:
                await beside.aclose(code)
        finally:
            if connection is not None:
                await connection.aclose(code)

    async def _resume(self) -> UpstreamClosed:
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

    async def _connect_and_relay(self, *, resumed: bool, first: bool) -> UpstreamClosed:
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
            self._status(STATUS_RESUMED)
        end = await self._serve(connection)
        await self.close(closes.NORMAL)
        return end

    async def _connect(self, handle: str | None, *, beside: bool = False) -> UpstreamConnection:
        """A new connection within the setup timeout: the one in use, or (``beside``) the one
        beside it.

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
        if beside:
            self.beside = connection
        else:
            self.connection = connection
        return connection

    async def _serve(self, connection: UpstreamConnection) -> UpstreamClosed:
        """Relay ``connection``, and every connection a ``goAway`` switch moves the session to,
        until one closes (returned)."""
        try:
            await self.link.attach(connection)
        except UpstreamClosed as closed:
            return closed
        while True:
            end = await self._read(connection)
            if isinstance(end, UpstreamClosed):
                await self._detach(connection)
                return end
            new, old_end = await self._open_beside(connection)
            if new is None:
                if old_end is not None:  # it closed while no new one could be opened
                    await self._detach(connection)
                    return old_end
                continue  # it serves on, until it closes
            await self._detach(connection)
            if old_end is None:
                self.link.replay_after_switch()
            else:  # it closed meanwhile: what the handle lacks is as after any drop
                self.link.replay_after_drop()
            try:
                await self.link.attach(new)
            except UpstreamClosed as closed:
                return closed
            await self._drain(connection, new, closed=old_end is not None)
            connection = new

    async def _open_beside(
        self, old: UpstreamConnection
    ) -> tuple[UpstreamConnection | None, UpstreamClosed | None]:
        """A new connection with the latest handle, opened while ``old`` serves on (read and
        relayed), and how ``old`` closed meanwhile if it did. No new connection (None) when
        every attempt failed: the course lets ``old`` stay.

        Raises:
            UpstreamFailed: the handle was refused.
        """
        self._status(STATUS_RECONNECTING)
        opened: UpstreamConnection | None = None
        old_end: list[UpstreamClosed] = []

        async def serve_old() -> None:
            end = await self._read(old, follow=False)  # the switch resumes the handle it took
            assert isinstance(end, UpstreamClosed)  # no switch is decided while one is under way
            old_end.append(end)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_old)
            while (delay := self.course.next_attempt()) is not None:
                await trio.sleep(delay)
                try:
                    opened = await self._connect(self.course.handle, beside=True)
                    break
                except (UpstreamRejected, UpstreamUnavailable) as exc:
                    self.course.attempt_failed(exc)
            nursery.cancel_scope.cancel(reason="a new connection is open, or none can be")
        if opened is None:
            self.course.stay()
        return opened, old_end[0] if old_end else None

    async def _drain(
        self, old: UpstreamConnection, new: UpstreamConnection, *, closed: bool
    ) -> None:
        """The browser's input has moved to ``new``: relay what ``old`` still owes (unless it
        ``closed``), then close it (1000). ``new`` is the connection in use from here, and is
        not read meanwhile."""
        self.course.connected()
        drain = self.course.begin_drain(trio.current_time(), transparent=self.link.transparent)
        self.connection, self.beside = new, old
        self.counters.reconnects += 1
        self._gauges.reconnects += 1
        self._status(STATUS_RESUMED)
        if drain is not None and not closed:
            await self._read(old, drain)
        self.beside = None
        await old.aclose(closes.NORMAL)

    async def _detach(self, connection: UpstreamConnection) -> None:
        """Stop sending to ``connection``; it is dropped under a browser message stuck in a
        write to it (bounded), and that message stays queued for the next one."""
        with trio.move_on_after(DETACH_TIMEOUT) as detaching:
            await self.link.detach()
        if detaching.cancelled_caught:
            await connection.abort()
            await self.link.detach()

    async def _read(
        self, connection: UpstreamConnection, drain: Drain | None = None, *, follow: bool = True
    ) -> ConnectionEnd | Drained:
        """Read and apply upstream messages until the connection closes or the course switches
        (when draining it, until it owes nothing or the ``drain``'s deadline passes). Without
        ``follow``, or when draining, its resumption handles are not the link's.

        Raises:
            UpstreamFailed: a message that is not JSON, or whose audio is corrupt.
            SlowClient: the browser's queue overflowed.
        """
        course = self.course
        if connection is not self._metered:  # its reports start over (core.usage)
            self._metered = connection
            self.counters.usage.new_connection()
        while True:
            deadline = course.switch_at if drain is None else drain.until
            try:
                if deadline == math.inf:
                    raw = await connection.receive()
                else:
                    with trio.move_on_at(deadline) as wait:
                        raw = await connection.receive()
                    if wait.cancelled_caught:
                        if drain is not None:
                            return DRAINED
                        if course.deadline_reached():
                            return SWITCH
                        continue
            except UpstreamClosed as closed:
                return closed
            try:
                if self.native:
                    event = translate_upstream_native(raw)
                else:
                    event = translate_upstream(raw, self.audio_out)
            except UpstreamDecodeError as exc:
                raise UpstreamFailed(str(exc)) from None
            self._apply(event, follow=follow and drain is None)
            if drain is not None:
                drain.on_event(event, trio.current_time())
            elif course.on_event(event, trio.current_time()):
                return SWITCH

    def _status(self, frame: str) -> None:
        """Tell a browser-protocol client the session's state (a native client is told
        nothing: Gemini has no such message)."""
        if not self.native:
            self.out.put(frame)

    def _apply(self, event: UpstreamEvent, *, follow: bool = True) -> None:
        """Count ``event`` and queue its frames for the browser; with ``follow`` (not a
        draining connection's), the link takes its resumption handle.

        Raises:
            UpstreamFailed: a ``toolCall`` nested deeper than JSON can be written.
            SlowClient: the browser's queue overflowed.
        """
        self.counters.message_count += 1
        if event.interrupted:
            self.out.drop_audio()
        if event.usage is not None:
            self.counters.note_usage(event.usage)
        if event.turn_complete:
            self.counters.usage.turn_complete()
        if self.counters.on_event is not None:
            self.counters.on_event(event.usage is not None, event.turn_complete, event.generating)
        if follow and event.resumption_handle is not None:
            self.link.handle_received(event.consumed_index)
        self.counters.usage.audio_out_bytes += event.inline_audio_bytes
        for frame in event.frames:
            if isinstance(frame, bytes):
                self.counters.usage.audio_out_bytes += len(frame)
            self.out.put(frame)
        tool_call = event.tool_call
        if tool_call is not None and self.tools is not None:
            tool_call = self.tools.take_call(tool_call)
        if tool_call is not None:
            try:
                if self.native:  # as Gemini sent it
                    self.out.put(orjson.dumps(tool_call).decode())
                else:
                    self.out.put(with_session_stats(tool_call, self.counters.tool_call_stats()))
            except (UpstreamDecodeError, orjson.JSONEncodeError):
                raise UpstreamFailed("upstream sent JSON nested too deep") from None
        cancellation = event.tool_cancellation
        if cancellation is not None and self.tools is not None:
            cancellation = self.tools.take_cancellation(cancellation)
        if cancellation is not None:
            try:
                self.out.put(orjson.dumps(cancellation).decode())
            except orjson.JSONEncodeError:
                raise UpstreamFailed("upstream sent JSON nested too deep") from None
