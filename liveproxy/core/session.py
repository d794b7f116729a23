"""One browser session: a nursery of tasks; the first outcome ends it, nothing outlives it.

Tasks (all in :meth:`Session.run`'s nursery):

- the :class:`~liveproxy.core.browser_reader.BrowserReader`: first frame -> setup; then browser
  frames -> :class:`UpstreamLink`.
- ``relay_upstream``: opens upstream connections (resuming on ``goAway`` or a drop), and turns
  upstream messages into frames on the :class:`BrowserQueue`. When to switch, resume or give
  up is decided by its :class:`~liveproxy.core.course.Course` (sync); the relay moves the bytes and
  runs the timers.
- ``limit_time``: the session time limit. ``await_shutdown``: the server ending sessions.

The browser writer is not here: it belongs to the route, because a browser that stopped reading
can hold a socket write forever (Hypercorn shields it), and the session must still end.

Every task reports to a :class:`Race`. The first outcome (an
:class:`~liveproxy.contract.endings.Ended`, or a :class:`SessionError`) wins and cancels the
others; the relay is asked to stop instead of being cancelled, so the upstream connection is
closed gracefully from uncancelled code.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Final

import attrs
import trio
from trio_websocket import CloseReason, ConnectionClosed

from liveproxy.contract.codec import encode_session_resumable
from liveproxy.contract.endings import SHUTDOWN, TIME_LIMIT, Outcome
from liveproxy.contract.errors import (
    UpstreamFailed,
    UpstreamRejected,
    UpstreamUnavailable,
)
from liveproxy.contract.session_setup import upstream_setup_message
from liveproxy.contract.translate import (
    AudioAligner,
    UpstreamDecodeError,
    translate_upstream,
    with_session_stats,
)
from liveproxy.core.browser import BrowserQueue
from liveproxy.core.browser_reader import BrowserReader
from liveproxy.core.course import Course
from liveproxy.core.keepalive import keep_alive
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import BrowserPort
from liveproxy.core.race import Race
from liveproxy.core.resumable import MIN_REMAINING_SECONDS, Resumable, resumable_ending
from liveproxy.core.services import SessionServices
from liveproxy.core.stats import SessionCounters
from liveproxy.core.upstream import (
    CLOSE_TIMEOUT,
    Connection,
    UpstreamTarget,
    model_path,
)
from liveproxy.protocol import closes

STATUS_RECONNECTING: Final = '{"sessionStatus":{"state":"reconnecting"}}'
STATUS_RESUMED: Final = '{"sessionStatus":{"state":"resumed"}}'


@attrs.frozen
class _Switch:
    """``goAway`` came and a resumable handle is held: move to a new connection."""


@attrs.frozen
class _Closed:
    code: int
    reason: str

    @classmethod
    def of(cls, reason: CloseReason | None) -> _Closed:
        if reason is None:
            return cls(closes.ABNORMAL, "")
        return cls(reason.code, reason.reason or "")


_ConnectionEnd = _Switch | _Closed


class Session:
    """The tasks of one session and the state they share."""

    def __init__(
        self,
        socket: BrowserPort,
        out: BrowserQueue,
        services: SessionServices,
        *,
        time_limit: float,
        resumed: Resumable | None = None,
        resume_token: str | None = None,
    ) -> None:
        """``resumed``: the conversation this socket continues (its handle, setup, stats and
        replay; ``time_limit`` is then what it has left). ``resume_token``: announced to the
        browser after ``setupComplete`` (None: conversations are not resumable)."""
        self.socket = socket
        self.out = out
        self.services = services
        self.config = services.config
        self.time_limit = time_limit
        self.resumed = resumed
        self.resume_token = resume_token
        self._started_at = now = trio.current_time()
        self.counters = (
            SessionCounters(started_at=now)
            if resumed is None
            else SessionCounters.continuing(resumed.totals, resumed.elapsed_seconds, now)
        )
        self.race = Race()
        # Vertex resumes transparently: the link replays exactly what a new connection lacks.
        self.link = UpstreamLink(
            self.config.upstream_buffer_bytes, transparent=self.config.backend == "vertex"
        )
        self.reader = BrowserReader(socket, self.link, out, self.counters, self.config)
        self.course = Course(self.config.reconnect_attempts)
        self.audio_out = AudioAligner()
        self._resumable_announced = False
        if resumed is not None:
            self.reader.preset(resumed.setup)
            self.course.handle = resumed.handle
            self.link.preload(resumed.replay)

    async def run(self) -> Outcome:
        """Run until the first outcome; every task and upstream connection is gone on return."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.race.run, self.reader.run)
            nursery.start_soon(self.race.run, self._limit_time)
            nursery.start_soon(self.race.run, self._await_shutdown)
            # The relay is not cancelled on the outcome: it stops itself, to close upstream cleanly.
            nursery.start_soon(partial(self.race.run, self._relay_upstream, cancellable=False))
        assert self.race.outcome is not None
        return self.race.outcome

    # -- timers ------------------------------------------------------------------------------

    async def _limit_time(self) -> Outcome:
        """Return ``time_limit`` once the session has lasted its limit (cancelled by the race)."""
        await trio.sleep(self.time_limit)
        return TIME_LIMIT

    async def _await_shutdown(self) -> Outcome:
        """Return ``shutdown`` once the server ends sessions (cancelled by the race)."""
        await self.services.shutdown_now.wait()
        return SHUTDOWN

    # -- the upstream -> browser direction ---------------------------------------------------

    async def _relay_upstream(self) -> Outcome | None:
        """Connect once the setup is known, relay, and resume on goAway or drops as told.

        Not cancelled by the race: it notices the outcome through the scopes it registers and
        returns None, so the open connection is closed gracefully. Returns ``upstream_closed``
        when Gemini ends the session.

        Raises:
            UpstreamUnavailable: no upstream is configured, or the first connection failed.
            UpstreamRejected: the first connection was refused.
            UpstreamFailed: a drop could not be resumed.
        """
        with self.race.cancel_on_decide():
            await self.reader.setup_ready.wait()
        setup = self.reader.setup
        if self.race.decided or setup is None:
            return None
        target = self.services.target
        if target is None:
            raise UpstreamUnavailable(
                "no upstream is configured (set GOOGLE_API_KEY, PROJECT_ID or UPSTREAM_URL)"
            )
        model = model_path(self.config, setup["model"])
        end = await self._connect_and_relay(
            target, model, resumed=self.course.handle is not None, first=True
        )
        while True:
            if end is None:
                return None
            if isinstance(end, _Closed):
                ending = self.course.closed(end.code, self._redact(end.reason))
                if ending is not None:
                    return ending
                self.link.replay_after_drop()
            else:
                self.link.replay_after_switch()
            self.out.put(STATUS_RECONNECTING)
            end = await self._resume(target, model)

    async def _resume(self, target: UpstreamTarget, model: str) -> _ConnectionEnd | None:
        """Reconnect with the latest handle, with the course's back-off.

        Raises:
            UpstreamFailed: the handle was refused, or every attempt failed.
        """
        while (delay := self.course.next_attempt()) is not None:
            if delay:
                with self.race.cancel_on_decide():
                    await trio.sleep(delay)
            if self.race.decided:
                return None
            try:
                return await self._connect_and_relay(target, model, resumed=True, first=False)
            except (UpstreamRejected, UpstreamUnavailable) as exc:
                self.course.attempt_failed(exc)
        raise self.course.gave_up()

    async def _connect_and_relay(
        self, target: UpstreamTarget, model: str, *, resumed: bool, first: bool
    ) -> _ConnectionEnd | None:
        """Open one connection (resuming the handle if ``resumed``) and relay until it ends.

        The ``first`` connection of this socket answers the browser's setup (``setupComplete``,
        also when it continues a resumed conversation); a later one says ``resumed``.

        The attempt's scope is registered with the race, so an outcome abandons it. Returns how the
        connection ended (None: the session is over); the connection is closed on return.

        Raises:
            UpstreamUnavailable, UpstreamRejected, UpstreamFailed: from :func:`open_connection`.
        """
        assert self.reader.setup is not None
        handle = self.course.handle if resumed else None
        message = upstream_setup_message(
            self.reader.setup, model, handle, transparent=self.link.transparent
        )
        connecting = trio.CancelScope(
            deadline=trio.current_time() + self.config.setup_timeout_seconds
        )
        self.race.add(connecting)
        try:
            async with self.services.connect(
                target,
                message,
                connecting,
                on_open=self.services.gauges.upstream_opened,
            ) as connection:
                self.race.discard(connecting)
                self.course.connected()
                if first:
                    setup_complete = connection.setup_complete
                    self.out.put(
                        setup_complete.decode()
                        if isinstance(setup_complete, bytes)
                        else setup_complete
                    )
                    self.counters.setup_completed()
                    self._announce_resumable()
                else:
                    self.counters.reconnects += 1
                    self.services.gauges.reconnects += 1
                    self.out.put(STATUS_RESUMED)
                return await self._relay(connection)
        finally:
            self.race.discard(connecting)

    async def _relay(self, connection: Connection) -> _ConnectionEnd | None:
        """Attach ``connection`` to the link and read it until it ends or the race is decided.

        Always detaches the link before returning (forcing the connection closed if a browser
        message is stuck writing to it); on shutdown the connection is closed with 1001.
        """
        try:
            await self.link.attach(connection.ws)
        except ConnectionClosed as exc:
            return _Closed.of(exc.reason)
        end: _ConnectionEnd | None = None
        with self.race.cancel_on_decide() as reading:
            end = await self._read_with_keepalive(connection)
        with trio.move_on_after(CLOSE_TIMEOUT) as detaching:
            await self.link.detach()
        if detaching.cancelled_caught:
            # A browser message is stuck in a write to a connection that stopped reading:
            # closing it fails that write, and the message stays queued for the next one.
            with trio.CancelScope() as forcefully:
                forcefully.cancel()  # no close handshake: the TCP connection just closes
                await connection.ws.aclose()
            await self.link.detach()
        if reading.cancelled_caught:
            if self.race.outcome == SHUTDOWN:
                connection.close_code = closes.GOING_AWAY
            return None
        return end

    async def _read_with_keepalive(self, connection: Connection) -> _ConnectionEnd:
        """Read upstream; with pings on, a connection that stops answering counts as dropped.

        Gemini's pongs can take 8-30 s, so the pong timeout is generous by default.
        """
        interval = self.config.upstream_ping_interval_seconds
        if not interval:
            return await self._read_upstream(connection)
        end: _ConnectionEnd = _Closed(closes.ABNORMAL, "upstream stopped answering pings")
        async with trio.open_nursery() as nursery:
            pong_timeout = self.config.upstream_pong_timeout_seconds
            nursery.start_soon(
                keep_alive, connection.ws, interval, pong_timeout, nursery.cancel_scope
            )
            end = await self._read_upstream(connection)
            nursery.cancel_scope.cancel()
        return end

    async def _read_upstream(self, connection: Connection) -> _ConnectionEnd:
        """Read and apply upstream messages until the connection closes or the course switches.

        Raises:
            UpstreamFailed: a message that is not JSON, or whose audio is corrupt.
            SlowClient: the browser's queue overflowed.
        """
        ws = connection.ws
        course = self.course
        while True:
            try:
                if course.switch_at == math.inf:
                    raw = await ws.get_message()
                else:
                    with trio.move_on_at(course.switch_at) as wait:
                        raw = await ws.get_message()
                    if wait.cancelled_caught:
                        if course.deadline_reached():
                            return _Switch()
                        continue
            except ConnectionClosed as exc:
                return _Closed.of(exc.reason)
            try:
                event = translate_upstream(raw, self.audio_out)
            except UpstreamDecodeError as exc:
                raise UpstreamFailed(str(exc)) from None
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
            if course.on_event(event, trio.current_time()):
                return _Switch()

    def _announce_resumable(self) -> None:
        """Send the browser its resume token, after ``setupComplete`` (once per socket)."""
        if self.resume_token is None or self._resumable_announced:
            return
        self._resumable_announced = True
        window = self.config.resume_window_seconds
        self.out.put(encode_session_resumable(self.resume_token, window))

    def resumable(self, outcome: Outcome | None, conversation_id: str) -> Resumable | None:
        """What a new socket needs to continue this conversation, or None when it cannot:
        a fatal ending (``outcome`` None means the socket was cancelled, the browser gone), no
        ``setupComplete`` yet, resumption off, or too little time left."""
        setup = self.reader.setup
        if self.resume_token is None or not self._resumable_announced or setup is None:
            return None
        if not resumable_ending(outcome):
            return None
        remaining = self.time_limit - (trio.current_time() - self._started_at)
        if remaining < MIN_REMAINING_SECONDS:
            return None
        counters = self.counters
        return Resumable(
            conversation_id=conversation_id,
            handle=self.course.handle,
            setup=setup,
            remaining_seconds=round(remaining, 3),
            elapsed_seconds=counters.elapsed(),
            totals=counters.totals(),
            replay=tuple(self.link.replayable()),
        )

    def _redact(self, text: str) -> str:
        target = self.services.target
        return target.redact(text) if target is not None else text
