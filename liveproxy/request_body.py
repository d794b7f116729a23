"""Request bodies read with a bound, below Quart: a client cannot make the server hold more.

``POST /api/auth`` takes a few bytes of JSON. :class:`BoundedBodies` reads the body of requests
to the paths it guards itself, at most ``limit`` bytes, before Quart sees the request; a body
that declares or turns out to be longer is answered 413 ``payload_too_large`` at once, read no
further, and the connection is closed (the unread rest of the body cannot be skipped).
"""

from __future__ import annotations

from typing import Any

from liveproxy.browser import ASGIMessage, Receive, Send
from liveproxy.codec import to_json
from liveproxy.models import ApiError, ErrorResponse


class BoundedBodies:
    """ASGI middleware: requests to ``paths`` reach ``app`` with a body of at most ``limit``."""

    def __init__(self, app: Any, paths: frozenset[str], limit: int) -> None:
        self._app = app
        self._paths = paths
        self._limit = limit

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self._paths:
            await self._app(scope, receive, send)
            return
        body = None if _declared_length(scope) > self._limit else await self._read(receive)
        if body is None:
            await _payload_too_large(send, self._limit)
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


async def _payload_too_large(send: Send, limit: int) -> None:
    body = to_json(ErrorResponse(ApiError("payload_too_large", f"the body exceeds {limit} bytes")))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
