"""The ASGI types the web layer's middleware and routes pass around, and their shared bits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

ASGIMessage: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
Send: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]


def header(scope: ASGIMessage, name: bytes) -> str | None:
    """The first ``name`` header of an ASGI scope, decoded (latin-1), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def answered_unless_http(scope: ASGIMessage, receive: Receive, send: Send) -> bool:
    """For an HTTP-only app with nothing to start or stop: answer Hypercorn's lifespan
    messages, or close a WebSocket unaccepted (403). False, having done nothing, for HTTP."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return True
    if scope["type"] != "http":
        await send({"type": "websocket.close"})
        return True
    return False


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer Hypercorn's lifespan messages: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
