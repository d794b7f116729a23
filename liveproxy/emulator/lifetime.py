"""The connection's lifetime: ``goAway`` ahead of the end, then close 1011 at the end.

Driven by trio timers, not by traffic, so an idle connection ends on time too.
"""

from __future__ import annotations

from typing import NoReturn

import trio

from liveproxy.emulator import messages
from liveproxy.emulator.endings import Close, Drop
from liveproxy.emulator.transport import Transport
from liveproxy.protocol.closes import DEADLINE_EXPIRED, INTERNAL


class Lifetime:
    """Ends a connection ``lifetime`` seconds after it was created.

    ``goAway`` goes out ``lead`` seconds before the end (clamped to the lifetime), or as soon
    as ``setupComplete`` has been sent if that is later (never, if it never is, nor from a
    stalled connection); :meth:`go_away_now` brings both forward.
    """

    def __init__(self, lifetime: float, lead: float) -> None:
        now = trio.current_time()
        self._lead = lead
        self._end = now + lifetime
        self._warn = trio.CancelScope(deadline=now + max(0.0, lifetime - lead))
        self._finish = trio.CancelScope(deadline=self._end)

    def go_away_now(self) -> None:
        """Send ``goAway`` at once and end ``lead`` seconds from now (or sooner, if the
        lifetime ends sooner)."""
        now = trio.current_time()
        self._end = min(self._end, now + self._lead)
        self._finish.deadline = self._end
        self._warn.deadline = now

    def end_by(self, deadline: float) -> None:
        """End at ``deadline`` (trio time) if that is sooner, ``goAway`` ``lead`` seconds
        before it (an ephemeral token's ``expireTime``)."""
        if deadline < self._end:
            self._end = deadline
            self._finish.deadline = deadline
            self._warn.deadline = min(self._warn.deadline, deadline - self._lead)

    async def run(self, transport: Transport, ready: trio.Event) -> NoReturn:
        """Wait out the lifetime, sending ``goAway`` on the way.

        Raises:
            Close: 1011 "Deadline expired before operation could complete." at the end.
            Drop: at the end, if the connection is stalled (it sends nothing any more).
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._go_away, transport, ready)
            with self._finish:
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        if transport.stalled:
            raise Drop()
        raise Close(INTERNAL, DEADLINE_EXPIRED)

    async def _go_away(self, transport: Transport, ready: trio.Event) -> None:
        with self._warn:
            await trio.sleep_forever()
        sent_at = self._warn.deadline
        if not ready.is_set():
            await ready.wait()
            sent_at = trio.current_time()
        if not transport.stalled:
            await transport.send(messages.go_away(self._end - sent_at))
