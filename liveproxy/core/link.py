"""The browser -> upstream direction: one ordered stream over successive upstream connections.

The browser reader is the only producer. While a connection is attached, :meth:`UpstreamLink.send`
writes straight to it (no extra task or channel hop on the audio path). While none is (before
``setupComplete``, during a reconnect) messages wait in a buffer bounded in bytes, and a producer
that finds it full waits: backpressure reaches the browser's TCP connection. :meth:`attach`
sends the buffer first, in order, then lets producers write directly again.

Turn-level messages (text, tool responses, images, stream signals) sent since the latest
resumption handle are also remembered, so that after an unexpected drop they can be sent again
on the resumed connection: the handle's state does not include them. Audio is not remembered:
replaying the tail of an utterance would not restore it, and it would cost memory per session.
"""

from __future__ import annotations

from collections import deque

import trio
from trio_websocket import ConnectionClosed

from liveproxy.core.ports import UpstreamSocket


class UpstreamLink:
    """Browser messages to the current upstream connection, in order, none lost on a switch."""

    #: At most this many turn-level messages are remembered for a replay.
    REPLAY_LIMIT = 32

    def __init__(self, max_buffered_bytes: int) -> None:
        self._max_bytes = max_buffered_bytes
        self._pending: deque[tuple[str, bool]] = deque()  # (message, replayable)
        self._pending_bytes = 0
        self._since_handle: deque[str] = deque(maxlen=self.REPLAY_LIMIT)
        self._ws: UpstreamSocket | None = None
        self._flushing = False
        self._changed = trio.Event()
        self._waiters = 0

    @property
    def buffered_bytes(self) -> int:
        return self._pending_bytes

    async def send(self, message: str, *, replayable: bool = False) -> None:
        """Send ``message`` after everything sent before it.

        Returns once it is written to the attached connection, or buffered while none is; waits
        while the buffer is over its bound. A connection that fails under a write is detached
        and the message stays buffered for the next one. ``replayable`` messages are remembered
        after sending until the next :meth:`handle_received`.
        """
        self._pending.append((message, replayable))
        self._pending_bytes += len(message)
        while True:
            ws = self._ws
            if ws is not None and not self._flushing:
                await self._flush(ws, attaching=False)
                return
            if self._pending_bytes <= self._max_bytes:
                return
            await self._wait_for_change()

    async def attach(self, ws: UpstreamSocket) -> None:
        """Send the buffered messages on ``ws``, then make it the connection producers write to.

        Raises:
            ConnectionClosed: ``ws`` closed while the buffer was being sent (what was not sent
                stays buffered).
        """
        await self._wait_until_not_flushing()
        await self._flush(ws, attaching=True)
        self._ws = ws
        self._notify()

    def handle_received(self) -> None:
        """A resumable handle arrived: it covers everything sent so far."""
        self._since_handle.clear()

    def preload(self, messages: tuple[str, ...]) -> None:
        """Queue turn-level ``messages`` (a resumed conversation's replay) ahead of anything new;
        call it before the first :meth:`send`."""
        for message in messages:
            self._pending.append((message, True))
            self._pending_bytes += len(message)

    def replayable(self) -> list[str]:
        """The turn-level messages the latest handle does not cover, in order: those sent since
        it, then those still waiting to be sent."""
        return [*self._since_handle, *(m for m, replayable in self._pending if replayable)]

    def replay_after_drop(self) -> int:
        """Queue again, ahead of the rest, the turn-level messages the handle does not cover.

        Call it while detached, after a connection dropped; returns how many were queued.
        """
        replay = list(self._since_handle)
        self._since_handle.clear()
        for message in reversed(replay):
            self._pending.appendleft((message, True))
            self._pending_bytes += len(message)
        return len(replay)

    async def detach(self) -> None:
        """Stop writing to the current connection; returns once no write to it is in flight."""
        self._ws = None
        self._notify()
        await self._wait_until_not_flushing()

    async def _flush(self, ws: UpstreamSocket, *, attaching: bool) -> None:
        """Write pending messages to ``ws`` in order, while it stays attached (or while attaching).

        Raises:
            ConnectionClosed: ``ws`` closed while ``attaching`` (what was not sent stays pending);
                otherwise a closed connection is just detached.
        """
        self._flushing = True
        try:
            while self._pending and (attaching or self._ws is ws):
                message, replayable = self._pending[0]
                try:
                    await ws.send_message(message)
                except ConnectionClosed:
                    if attaching:
                        raise
                    if self._ws is ws:
                        self._ws = None
                    return
                self._pending.popleft()
                self._pending_bytes -= len(message)
                if replayable:
                    self._since_handle.append(message)
        finally:
            self._flushing = False
            self._notify()

    async def _wait_until_not_flushing(self) -> None:
        while self._flushing:
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        self._waiters += 1
        try:
            await self._changed.wait()
        finally:
            self._waiters -= 1

    def _notify(self) -> None:
        if self._waiters:  # the common case, nobody waiting, costs no new Event
            self._changed.set()
            self._changed = trio.Event()
