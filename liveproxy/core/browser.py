"""The browser side of a session: the ASGI WebSocket and the bounded queue that feeds it.

The ``/ws`` route speaks ASGI directly (see :mod:`liveproxy.web.app`): every audio frame would
otherwise cross Quart's extra task, memory channel and signal dispatch in each direction.

Writes go through one :class:`BrowserQueue` and one writer task. Hypercorn writes to the socket
inside a shielded cancel scope, so a send to a browser that stopped reading cannot be cancelled;
the queue is what keeps that browser from holding up anything else: it is bounded in bytes, and
``put`` raises :class:`~liveproxy.contract.errors.SlowClient` instead of waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TypeAlias

import trio

from liveproxy.contract.errors import MessageTooBig, RateLimited, SlowClient
from liveproxy.core.footprint import footprint
from liveproxy.core.ports import BrowserPort, Frame
from liveproxy.protocol.closes import truncate_reason

#: What the app receives instead of a message over the limit (an extra key on a receive event;
#: see :mod:`liveproxy.web.hypercorn_fixes`).
MESSAGE_TOO_BIG: Final = "liveproxy.message_too_big"
#: What the app receives once the client sends frames faster than its rate (the same way).
RATE_LIMITED: Final = "liveproxy.rate_limited"
ASGIMessage: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
Send: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]


class BrowserGone(Exception):
    """The browser closed its socket (or the connection dropped)."""


class BrowserSocket:
    """One accepted browser WebSocket, over ASGI ``receive``/``send``.

    ``frames_in`` counts the messages received (one over the size limit too), ``frames_out``
    those sent while the browser was there (for the metrics, read once the socket is done).
    """

    __slots__ = (
        "_closed",
        "_receive",
        "_send",
        "frames_in",
        "frames_out",
        "max_message_bytes",
        "scope",
    )

    def __init__(
        self, scope: ASGIMessage, receive: Receive, send: Send, *, max_message_bytes: int
    ) -> None:
        self.scope = scope
        self.max_message_bytes = max_message_bytes
        self._receive = receive
        self._send = send
        self._closed = False
        self.frames_in = 0
        self.frames_out = 0

    @property
    def query_string(self) -> bytes:
        value: bytes = self.scope.get("query_string", b"")
        return value

    async def accept(self) -> bool:
        """Wait for the handshake and accept it; False if the client left before."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return False
        await self._send({"type": "websocket.accept"})
        return True

    async def reject(self, status: int, body: bytes) -> None:
        """Answer the handshake with an HTTP ``status`` and a JSON ``body`` instead of accepting
        it (a proxy in front, such as nginx, can then try another instance)."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await self._send(
            {"type": "websocket.http.response.start", "status": status, "headers": headers}
        )
        await self._send({"type": "websocket.http.response.body", "body": body})
        self._closed = True

    async def receive(self) -> Frame:
        """The next frame from the browser (an empty binary frame is ``b""``).

        Raises:
            BrowserGone: the browser closed or the connection dropped.
            MessageTooBig: the browser sent a message over the limit (Hypercorn's buffer,
                bounded by :mod:`liveproxy.web.hypercorn_fixes`, refused it unread).
            RateLimited: the browser sent frames faster than ``BROWSER_MESSAGE_RATE`` (counted
                by :mod:`liveproxy.web.hypercorn_fixes`, every frame).
        """
        message = await self._receive()
        if message["type"] == "websocket.receive":
            self.frames_in += 1
            if message.get(MESSAGE_TOO_BIG):
                raise MessageTooBig(f"a message exceeds the {self.max_message_bytes}-byte limit")
            if message.get(RATE_LIMITED):
                raise RateLimited("more frames per second than BROWSER_MESSAGE_RATE allows")
            data = message.get("bytes")
            if data is not None:
                return bytes(data)
            text: str | None = message.get("text")
            return "" if text is None else text
        self._closed = True
        raise BrowserGone()

    async def send(self, frame: Frame) -> None:
        """Send one frame (binary for bytes, text for str); a no-op once the socket is gone."""
        if not self._closed:
            self.frames_out += 1
        if isinstance(frame, bytes):
            await self._send({"type": "websocket.send", "bytes": frame})
        else:
            await self._send({"type": "websocket.send", "text": frame})

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame once; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        await self._send(
            {"type": "websocket.close", "code": code, "reason": truncate_reason(reason)}
        )


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
