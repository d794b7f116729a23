"""The queue of frames waiting for the browser, bounded by the memory they take, and its writer.

Writes go through one :class:`BrowserQueue` and one writer task. Hypercorn writes to sockets
inside a shielded cancel scope, so a send to a browser that stopped reading cannot be cancelled;
the queue is what keeps that browser from holding up anything else: it is bounded, and ``put``
raises :class:`~liveproxy.contract.errors.SlowClient` instead of waiting.
"""

from __future__ import annotations

from collections import deque

import trio

from liveproxy.contract.errors import SlowClient
from liveproxy.core.footprint import footprint
from liveproxy.core.ports import BrowserPort, Frame


class BrowserQueue:
    """Frames waiting for the browser, bounded by the memory they take (their footprint).

    One producer side (the session) and one consumer (:meth:`run_writer`). Audio frames can be
    dropped at once on ``interrupted``. :meth:`finish` appends the session's last message and the
    close code; the writer sends them and closes the socket.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._wakeup = trio.Event()
        self._close: tuple[int, str] | None = None

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, frame: Frame) -> None:
        """Queue ``frame`` for the browser.

        Raises:
            SlowClient: the queue would exceed its byte bound (the browser reads too slowly).
        """
        size = footprint(frame)
        if self._bytes + size > self._max_bytes and self._frames:
            raise SlowClient(
                f"the browser is reading too slowly ({self._bytes} bytes waiting, "
                f"limit {self._max_bytes})"
            )
        self._frames.append(frame)
        self._bytes += size
        self._wakeup.set()

    def drop_audio(self) -> int:
        """Drop every queued audio (binary) frame; return the bytes dropped."""
        kept: deque[Frame] = deque(f for f in self._frames if not isinstance(f, bytes))
        dropped = self._bytes - sum(footprint(f) for f in kept)
        self._frames = kept
        self._bytes -= dropped
        return dropped

    def finish(
        self, last: Frame | None, code: int, reason: str = "", *, drop: bool = False
    ) -> None:
        """Queue the session's last message (if any) and the close frame; no more puts after.

        With ``drop``, frames still waiting are discarded first (the browser is not reading).
        """
        if drop:
            self._frames.clear()
            self._bytes = 0
        if last is not None:
            self._frames.append(last)
            self._bytes += footprint(last)
        self._close = (code, reason)
        self._wakeup.set()

    async def run_writer(self, socket: BrowserPort) -> None:
        """Send queued frames in order until :meth:`finish`; then send the close frame.

        Closes ``socket`` (with the code given to :meth:`finish`) before returning.
        """
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            # Hypercorn's send returns without yielding once the browser is gone; this loop
            # still ends (nothing can be queued while it runs), and wait() then checkpoints.
            while self._frames:
                frame = self._frames.popleft()
                self._bytes -= footprint(frame)
                await socket.send(frame)
            if self._close is not None:
                await socket.close(*self._close)
                return
