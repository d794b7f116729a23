"""One browser session: a race of tasks in one nursery; the first outcome ends it.

The tasks (:class:`~liveproxy.core.race.Race`): the
:class:`~liveproxy.core.browser_reader.BrowserReader` (browser -> upstream), the
:class:`~liveproxy.core.relay.Relay` (upstream connections, upstream -> browser), the time limit,
the server's shutdown, the operator's end and (with budgets) the budget guard. The reader hands
the setup to the relay on a channel. The first outcome (an
:class:`~liveproxy.contract.endings.Ended`, or a :class:`~liveproxy.contract.errors.SessionError`)
cancels the rest.

The upstream connections live in a nursery opened outside the race, so the race's cancellation
never cuts one: once the race is over, the session closes the connection in use with the code
the outcome implies (1001 on shutdown, else 1000), from code the race no longer cancels.

The browser writer is not here: it belongs to the route, because a browser that stopped reading
can hold a socket write forever (Hypercorn shields it), and the session must still end.
"""

from __future__ import annotations

import trio

from liveproxy.contract.codec import encode_session_resumable
from liveproxy.contract.endings import ENDED_BY_OPERATOR, SHUTDOWN, TIME_LIMIT, Outcome
from liveproxy.contract.native import resumption_update
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.browser_reader import BrowserReader, Setup
from liveproxy.core.budget_guard import BudgetGuard
from liveproxy.core.course import Course
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import BrowserPort, ServerTools
from liveproxy.core.race import Race
from liveproxy.core.relay import Relay
from liveproxy.core.resumable import MIN_REMAINING_SECONDS, Resumable, resumable_ending
from liveproxy.core.services import SessionServices
from liveproxy.core.stats import SessionCounters
from liveproxy.core.tool_calls import ToolCalls
from liveproxy.protocol import closes


class Session:
    """One browser socket's session; :meth:`run` it once."""

    def __init__(
        self,
        socket: BrowserPort,
        out: BrowserQueue,
        services: SessionServices,
        *,
        time_limit: float,
        resumed: Resumable | None = None,
        resume_token: str | None = None,
        tools: ServerTools | None = None,
        native: EphemeralRequest | None = None,
        operator_ends: trio.Event | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        """``resumed``: the conversation this socket continues (its handle, setup, stats and
        replay; ``time_limit`` is then what it has left). ``resume_token``: announced to the
        browser after ``setupComplete`` (``sessionResumable``; a native client's
        ``sessionResumptionUpdate``, the token its handle), None: conversations are not
        resumable. ``tools``: the server's tools, bound to this session (None: every tool call
        goes to the browser).
        ``native``: the socket speaks Gemini's own protocol, with these constraints from its
        ephemeral token (see :mod:`liveproxy.contract.native`). ``operator_ends``: set when the
        operator ends the session (``ended_by_operator``). ``budget``: the guard of the
        client's budgets (None: no budget), one more racer."""
        self.socket = socket
        self.out = out
        self.services = services
        self.time_limit = time_limit
        self.resumed = resumed
        self.resume_token = resume_token
        self.native = native
        self.operator_ends = operator_ends
        self.budget = budget
        self._started_at = now = trio.current_time()
        self.counters = (
            SessionCounters(started_at=now)
            if resumed is None
            else SessionCounters.continuing(resumed.totals, resumed.elapsed_seconds, now)
        )
        upstream = services.upstream
        # Vertex resumes transparently: the link replays exactly what a new connection lacks.
        transparent = upstream is not None and upstream.transparent
        self.link = UpstreamLink(services.limits.upstream_buffer_bytes, transparent=transparent)
        self.course = Course(services.limits.reconnect_attempts)
        self.tool_calls = (
            None if tools is None else ToolCalls(tools, self.link, out, mirror=native is None)
        )
        self._setups = trio.open_memory_channel[Setup](1)
        self._resumable_announced = False
        self.relay: Relay | None = None
        if budget is not None:
            self.counters.on_event = budget.metered
        if resumed is not None:
            self.course.handle = resumed.handle
            self.link.preload(resumed.replay)

    async def run(self) -> Outcome:
        """Run until the first outcome; every task and upstream connection is gone on return."""
        limits = self.services.limits
        send_setup, receive_setup = self._setups
        if self.resumed is not None:  # the stored setup is used, whatever the browser sends
            send_setup.send_nowait(self.resumed.setup)
        reader = BrowserReader(
            self.socket,
            self.link,
            self.out,
            self.counters,
            setups=None if self.resumed is not None else send_setup,
            policy=limits.setup_policy,
            setup_timeout=limits.setup_timeout,
            native=self.native,
        )
        async with trio.open_nursery() as connections:
            relay = self.relay = Relay(
                self.services.upstream,
                connections,
                setups=receive_setup,
                link=self.link,
                out=self.out,
                counters=self.counters,
                course=self.course,
                gauges=self.services.gauges,
                setup_timeout=limits.setup_timeout,
                on_ready=self._announce_resumable,
                tools=self.tool_calls,
                native=self.native is not None,
            )
            racers = [reader.run, relay.run, self._limit_time, self._await_shutdown]
            if self.tool_calls is not None:
                racers.append(self.tool_calls.run)
            if self.operator_ends is not None:
                racers.append(self._await_operator)
            if self.budget is not None:
                racers.append(self.budget.run)
            outcome: Outcome | None = None
            try:
                outcome = await Race().run(*racers)
            finally:
                code = closes.GOING_AWAY if outcome == SHUTDOWN else closes.NORMAL
                await relay.close(code)  # bounded and shielded by the upstream adapter
        assert outcome is not None  # the reader always ends with one
        return outcome

    async def _limit_time(self) -> Outcome:
        """Return ``time_limit`` once the session has lasted its limit."""
        await trio.sleep(self.time_limit)
        return TIME_LIMIT

    async def _await_shutdown(self) -> Outcome:
        """Return ``shutdown`` once the server ends sessions."""
        await self.services.shutdown_now.wait()
        return SHUTDOWN

    async def _await_operator(self) -> Outcome:
        """Return ``ended_by_operator`` once the operator ends this session."""
        assert self.operator_ends is not None
        await self.operator_ends.wait()
        return ENDED_BY_OPERATOR

    def _announce_resumable(self) -> None:
        """Send the browser its resume token, after ``setupComplete`` (once per socket)."""
        if self.resume_token is None or self._resumable_announced:
            return
        self._resumable_announced = True
        if self.native is not None:
            self.out.put(resumption_update(self.resume_token))
            return
        window = self.services.limits.resume_window
        self.out.put(encode_session_resumable(self.resume_token, window))

    def resumable(self, outcome: Outcome | None, conversation_id: str) -> Resumable | None:
        """What a new socket needs to continue this conversation, or None when it cannot:
        a fatal ending (``outcome`` None means the socket was cancelled, the browser gone), no
        ``setupComplete`` yet, resumption off, or too little time left."""
        setup = self.relay.setup if self.relay is not None else None
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
