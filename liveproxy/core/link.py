"""The browser -> upstream direction: one ordered stream over successive upstream connections.

The browser reader is the only producer. While a connection is attached, :meth:`UpstreamLink.send`
writes straight to it (no extra task or channel hop on the audio path). While none is (before
``setupComplete``, during a reconnect) messages wait in a buffer bounded in bytes, and a producer
that finds it full waits: backpressure reaches the browser's TCP connection. :meth:`attach`
sends the buffer first, in order, then lets producers write directly again.

What is sent again on the next connection depends on the resumption mode.

- **Transparent** (Vertex, ``sessionResumption.transparent``): the link numbers the messages it
  writes to each connection (``setup``, sent by the connect code, is 0; the n-th message written
  after it is n; numbering starts again on every connection) and keeps every one written since
  the latest handle's ``lastConsumedClientMessageIndex`` k, audio included, within
  ``keep_bytes``. Each resumable handle drops the kept messages numbered <= k. After a drop, or
  a ``goAway`` switch (the old connection is closed by us, and what it got after k is not in the
  handle's state either), the next connection gets exactly the kept messages, in order, ahead of
  anything new: the conversation goes on as if nothing had happened. The kept messages are the
  very strings written (no copy). If the bound forced the oldest out, no exact replay is possible
  until a handle covers them again; a connection that ends meanwhile gets the turn-level replay
  below (the first shedding of a session is logged).
- **Otherwise** (Developer API): the turn-level messages (text, tool responses, images, stream
  signals) sent since the latest handle are remembered and, after a drop, sent again. Audio is
  not: replaying the tail of an utterance would not restore it. A ``goAway`` switch replays
  nothing. At most :attr:`UpstreamLink.REPLAY_LIMIT` messages and :data:`REPLAY_BYTES` are
  remembered: past either, the oldest are let go (logged once per session).

Every bound is on memory (:func:`~liveproxy.core.footprint.footprint`), not on characters.

What a new *browser* socket replays (:meth:`UpstreamLink.replayable`) is turn-level in both
modes: the user who spoke the audio has left, and the stored state is bounded.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import trio

from liveproxy.core.footprint import footprint
from liveproxy.core.ports import UpstreamClosed, UpstreamConnection

log = logging.getLogger("liveproxy")

#: With transparent resumption, the messages kept for an exact replay are bounded by this many
#: bytes: about 48 s of 16 kHz audio, enough for an utterance and its answer between two handles.
KEEP_BYTES: Final = 2 * 1024 * 1024
#: The turn-level messages remembered for a replay after a drop are bounded by this many bytes.
REPLAY_BYTES: Final = 2 * 1024 * 1024

_Entry = tuple[str, bool]  # (message, turn-level)


class UpstreamLink:
    """Browser messages to the current upstream connection, in order, none lost on a switch."""

    #: At most this many turn-level messages are remembered for a replay.
    REPLAY_LIMIT = 32

    def __init__(
        self, max_buffered_bytes: int, *, transparent: bool = False, keep_bytes: int = KEEP_BYTES
    ) -> None:
        self._max_bytes = max_buffered_bytes
        self._pending: deque[_Entry] = deque()
        self._pending_bytes = 0
        #: Turn-level messages since the handle, with their number on the current connection.
        self._turns: deque[tuple[int, str]] = deque()
        self._turn_bytes = 0
        self._turns_shed_logged = False
        self._transparent = transparent
        self._keep_max = keep_bytes
        #: Transparent: every message written since the handle's index, the last one numbered
        #: ``_written``; as many as ``_written - _covered`` unless the bound shed the oldest.
        self._kept: deque[_Entry] = deque()
        self._kept_bytes = 0
        self._written = 0  # messages written to the current connection
        self._covered = 0  # the latest handle's index on the current connection
        self._shed_logged = False
        self._ws: UpstreamConnection | None = None
        self._flushing = False
        self._changed = trio.Event()
        self._waiters = 0

    @property
    def buffered_bytes(self) -> int:
        return self._pending_bytes

    @property
    def transparent(self) -> bool:
        """Whether the connections resume transparently (every message is numbered and kept)."""
        return self._transparent

    @property
    def kept_bytes(self) -> int:
        """Transparent: the bytes kept for a replay (the messages after the handle's index)."""
        return self._kept_bytes

    @property
    def written(self) -> int:
        """The number of the last message written to the current connection (0: none yet)."""
        return self._written

    def exact(self) -> bool:
        """Transparent: whether every message after the latest handle's index is still kept
        (the bound may have shed the oldest)."""
        return len(self._kept) == self._written - self._covered

    async def send(self, message: str, *, replayable: bool = False) -> None:
        """Send ``message`` after everything sent before it.

        Returns once it is written to the attached connection, or buffered while none is; waits
        while the buffer is over its bound. A connection that fails under a write is detached
        and the message stays buffered for the next one. ``replayable`` (turn-level) messages
        are remembered after sending until a handle covers them.
        """
        self._pending.append((message, replayable))
        self._pending_bytes += footprint(message)
        while True:
            ws = self._ws
            if ws is not None and not self._flushing:
                await self._flush(ws, attaching=False)
                return
            if self._pending_bytes <= self._max_bytes:
                return
            await self._wait_for_change()

    async def attach(self, ws: UpstreamConnection) -> None:
        """Send the buffered messages on ``ws``, then make it the connection producers write to.

        Call it for each connection after the previous one ended with :meth:`replay_after_drop`
        or :meth:`replay_after_switch` (they start the numbering again).

        Raises:
            UpstreamClosed: ``ws`` closed while the buffer was being sent (what was not sent
                stays buffered).
        """
        await self._wait_until_not_flushing()
        await self._flush(ws, attaching=True)
        self._ws = ws
        self._notify()

    def handle_received(self, consumed: int | None = None) -> None:
        """A resumable handle arrived.

        Transparent: ``consumed`` is its ``lastConsumedClientMessageIndex`` on the current
        connection; the messages numbered up to it are in the handle's state and are let go.
        An index that could not be read (None) or that is past what was written is taken to
        cover everything written so far, as any handle is when not transparent.
        """
        if not self._transparent:
            self._clear_turns()
            return
        written = self._written
        covered = written if consumed is None or consumed > written else consumed
        self._covered = covered
        kept = self._kept
        for _ in range(len(kept) - (written - covered)):
            self._kept_bytes -= footprint(kept.popleft()[0])
        turns = self._turns
        while turns and turns[0][0] <= covered:
            self._turn_bytes -= footprint(turns.popleft()[1])

    def preload(self, messages: tuple[str, ...]) -> None:
        """Queue turn-level ``messages`` (a resumed conversation's replay) ahead of anything new;
        call it before the first :meth:`send`."""
        for message in messages:
            self._pending.append((message, True))
            self._pending_bytes += footprint(message)

    def replayable(self) -> list[str]:
        """The turn-level messages the latest handle does not cover, in order: those sent since
        it (transparent: numbered after its index), then those still waiting to be sent.

        This is what a new browser socket replays (:class:`~liveproxy.core.resumable.Resumable`):
        audio is left out even when transparent, since the user who spoke it has left and the
        stored state is bounded.
        """
        return [*(m for _, m in self._turns), *(m for m, replayable in self._pending if replayable)]

    def replay_after_drop(self) -> int:
        """Queue again, ahead of the rest, what the handle's state lacks after a drop.

        Transparent: every message written after the handle's index (while exact), else the
        turn-level messages sent since the handle. Call it while detached, after a connection
        dropped; returns how many were queued.
        """
        if self._transparent and self.exact():
            replay = list(self._kept)
        else:
            if self._transparent:
                log.warning(
                    "upstream connection ended with more than %d bytes sent after the last "
                    "resumption handle: only the %d turn-level messages are sent again",
                    self._keep_max,
                    len(self._turns),
                )
            replay = [(message, True) for _, message in self._turns]
        self._clear_turns()
        self._new_connection()
        for entry in reversed(replay):
            self._pending.appendleft(entry)
            self._pending_bytes += footprint(entry[0])
        return len(replay)

    def replay_after_switch(self) -> int:
        """After a ``goAway`` switch (we closed the old connection, at a handle): queue again
        what the handle's state lacks; returns how many were queued.

        Transparent: the messages written after the handle's index, as after a drop. Otherwise
        nothing (the turn-level messages since the handle stay remembered for a later drop).
        """
        if not self._transparent:
            self._new_connection()
            return 0
        return self.replay_after_drop()

    async def detach(self) -> None:
        """Stop writing to the current connection; returns once no write to it is in flight."""
        self._ws = None
        self._notify()
        await self._wait_until_not_flushing()

    def _new_connection(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0
        self._written = 0
        self._covered = 0

    async def _flush(self, ws: UpstreamConnection, *, attaching: bool) -> None:
        """Write pending messages to ``ws`` in order, while it stays attached (or while attaching).

        Raises:
            UpstreamClosed: ``ws`` closed while ``attaching`` (what was not sent stays pending);
                otherwise a closed connection is just detached.
        """
        self._flushing = True
        pending = self._pending
        kept = self._kept if self._transparent else None
        try:
            while pending and (attaching or self._ws is ws):
                entry = pending[0]
                message = entry[0]
                try:
                    await ws.send(message)
                except UpstreamClosed:
                    if attaching:
                        raise
                    if self._ws is ws:
                        self._ws = None
                    return
                pending.popleft()
                size = footprint(message)
                self._pending_bytes -= size
                # The hot path (every audio frame): a count and, when transparent, an append.
                self._written += 1
                if kept is not None:
                    kept.append(entry)
                    self._kept_bytes += size
                    if self._kept_bytes > self._keep_max:
                        self._shed()
                if entry[1]:
                    self._remember_turn(message, size)
        finally:
            self._flushing = False
            self._notify()

    def _shed(self) -> None:
        """Over the bound: let the oldest kept messages go (no exact replay until a handle
        covers them)."""
        kept = self._kept
        while self._kept_bytes > self._keep_max and kept:
            self._kept_bytes -= footprint(kept.popleft()[0])
        if not self._shed_logged:
            self._shed_logged = True
            log.info(
                "more than %d bytes sent upstream since the last resumption handle: "
                "a drop before the next one cannot be replayed exactly",
                self._keep_max,
            )

    def _remember_turn(self, message: str, size: int) -> None:
        """Remember a turn-level message just written, letting the oldest go past the bounds."""
        turns = self._turns
        turns.append((self._written, message))
        self._turn_bytes += size
        while len(turns) > self.REPLAY_LIMIT or self._turn_bytes > REPLAY_BYTES:
            self._turn_bytes -= footprint(turns.popleft()[1])
            if not self._turns_shed_logged:
                self._turns_shed_logged = True
                log.info(
                    "more than %d turn-level messages or %d bytes sent since the last "
                    "resumption handle: the oldest are not sent again after a drop",
                    self.REPLAY_LIMIT,
                    REPLAY_BYTES,
                )

    def _clear_turns(self) -> None:
        self._turns.clear()
        self._turn_bytes = 0

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
