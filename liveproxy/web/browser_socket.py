"""The browser's WebSocket at the ASGI level: the engine's browser port.

The ``/ws`` route speaks ASGI directly (see :mod:`liveproxy.web.ws_route`): every audio frame
would otherwise cross Quart's extra task, memory channel and signal dispatch in each direction.
What Hypercorn's stream refuses (a message over the size limit, frames past the rate; see
:mod:`liveproxy.serving.hypercorn_fixes`) arrives as a marked receive event and is raised here as
the engine's error.
"""

from __future__ import annotations

from typing import Final

from liveproxy.contract.errors import MessageTooBig, RateLimited
from liveproxy.core.ports import BrowserGone, Frame
from liveproxy.protocol.closes import truncate_reason
from liveproxy.web.asgi import ASGIMessage, Receive, Send

#: What the app receives instead of a message over the limit (an extra key on a receive event).
MESSAGE_TOO_BIG: Final = "liveproxy.message_too_big"
#: What the app receives once the client sends frames faster than its rate (the same way).
RATE_LIMITED: Final = "liveproxy.rate_limited"


class BrowserSocket:
    """One accepted browser WebSocket, over ASGI ``receive``/``send``.

    ``frames_in`` counts the messages received (one over the size limit too), ``frames_out``
    those sent while the browser was there (for the metrics, read once the socket is done).
    """

    __slots__ = (
        "_closed",
        "_held",
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
        self._held: Frame | None = None
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
                bounded by :mod:`liveproxy.serving.hypercorn_fixes`, refused it unread).
            RateLimited: the browser sent frames faster than ``BROWSER_MESSAGE_RATE`` (counted
                by :mod:`liveproxy.serving.hypercorn_fixes`, every frame).
        """
        if self._held is not None:
            frame, self._held = self._held, None
            return frame
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

    def unread(self, frame: Frame) -> None:
        """Give ``frame`` (received already, by admission) back: the next :meth:`receive`
        returns it."""
        self._held = frame

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
