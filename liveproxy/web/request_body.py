"""Request bodies read with bounds, below Quart: a client cannot make the server hold more.

No endpoint takes more than a few bytes (``POST /api/auth``'s JSON). :class:`BoundedBodies`
reads every request body itself before Quart sees the request, at most ``limit`` bytes within
``timeout`` seconds. A body that declares or turns out to be longer is answered 413
``payload_too_large`` at once and read no further; one that stops arriving is answered 408
``request_timeout``. Either way the connection is closed (the unread rest of the body cannot be
skipped), so a stalled or endless body holds no connection for long.
"""

from __future__ import annotations

from typing import Any

import trio

from liveproxy.contract.codec import to_json
from liveproxy.contract.payloads import ApiError, ErrorResponse
from liveproxy.web.asgi import ASGIMessage, Receive, Send


class BoundedBodies:
    """ASGI middleware: HTTP requests reach ``app`` with a whole body of at most ``limit``."""

    def __init__(self, app: Any, *, limit: int, timeout: float) -> None:
        self._app = app
        self._limit = limit
        self._timeout = timeout

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        body: bytes | None = None
        if _declared_length(scope) <= self._limit:
            with trio.move_on_after(self._timeout) as reading:
                body = await self._read(receive)
            if reading.cancelled_caught:
                message = f"the body did not arrive within {self._timeout:g} s"
                await _refuse(send, 408, "request_timeout", message)
                return
        if body is None:
            await _refuse(send, 413, "payload_too_large", f"the body exceeds {self._limit} bytes")
            return
        replayed = False

        async def receive_read_body() -> ASGIMessage:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, receive_read_body, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is left unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left; the app sees the disconnect
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _declared_length(scope: ASGIMessage) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # h11 refuses such a request before it gets here
    return 0


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    """Answer ``status`` in the error shape and close the connection."""
    body = to_json(ErrorResponse(ApiError(code, message)))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
