"""The emulator's one REST method: ``POST /v1alpha/auth_tokens`` (Google's token minting), on
the same port as the Live WebSocket, one request per TCP connection.

The key comes as ``x-goog-api-key`` (what the SDKs send) or ``?key=``. Answers are Google's:
200 ``{"name": "auth_tokens/<opaque>"}``; 403 ``PERMISSION_DENIED`` with no key; 400
``INVALID_ARGUMENT`` "API key not valid..." for a key the emulator does not accept (an
ephemeral token is not a key), or for a body Google refuses (:mod:`~liveproxy.emulator.tokens`);
404 for other paths (``auth_tokens`` exists in ``v1alpha`` only); 405 for another method on it;
413 for a body over :data:`MAX_BODY_BYTES`; 429 ``RESOURCE_EXHAUSTED`` when the book is full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import h11
import orjson
import trio

from liveproxy.emulator.routes import split_target
from liveproxy.emulator.tokens import (
    TOKEN_PREFIX,
    BadTokenRequest,
    TokenBook,
    read_token_request,
)
from liveproxy.protocol.closes import API_KEY_INVALID, UNREGISTERED_CALLER

MINT_PATH: Final = "/v1alpha/auth_tokens"
#: The largest request body read (a setup is a few KiB).
MAX_BODY_BYTES: Final = 256 * 1024
#: The largest request head read.
MAX_HEAD_BYTES: Final = 16 * 1024
_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
}


def is_rest(first_line: bytes) -> bool:
    """Whether a request line is a REST call (``POST``/``PUT``/``PATCH``/``DELETE`` or a
    ``GET`` of a ``/v1...`` path) rather than a WebSocket upgrade."""
    method, _, rest = first_line.partition(b" ")
    if method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
        return True
    return method == b"GET" and rest.startswith((b"/v1alpha/", b"/v1beta/", b"/v1/"))


async def serve_rest(
    stream: trio.abc.Stream, book: TokenBook, api_keys: tuple[str, ...], now: Callable[[], float]
) -> None:
    """Read one request from ``stream`` and answer it; the caller closes the stream.

    Raises:
        h11.RemoteProtocolError: not HTTP/1.1 (nothing is answered).
        trio.BrokenResourceError, trio.ClosedResourceError: the client went away.
    """
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(64 * 1024)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                await _send(stream, connection, 413, _error(413, "Request payload too large."))
                return
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if request is None:
        return
    status, answer = _answer(request, bytes(body), book, api_keys, now())
    await _send(stream, connection, status, answer)


def _answer(
    request: h11.Request, body: bytes, book: TokenBook, api_keys: tuple[str, ...], now: float
) -> tuple[int, bytes]:
    path, query = split_target(request.target.decode("latin-1"))
    if path != MINT_PATH:
        return 404, _error(404, "Requested entity was not found.")
    if request.method != b"POST":
        return 405, _error(405, "Method not allowed.")
    headers = {name.lower(): value.decode("latin-1") for name, value in request.headers}
    key = headers.get(b"x-goog-api-key", "").strip() or query.get("key", "")
    if not key:
        return 403, _error(403, UNREGISTERED_CALLER)
    if key.startswith(TOKEN_PREFIX) or key in book or (api_keys and key not in api_keys):
        return 400, _error(400, API_KEY_INVALID)
    try:
        parsed = read_token_request(body, now)
    except BadTokenRequest as exc:
        return 400, _error(400, exc.message)
    token = book.mint(parsed, now)
    if token is None:
        return 429, _error(429, "Resource has been exhausted (e.g. check quota).")
    return 200, orjson.dumps({"name": token.name})


def _error(status: int, message: str) -> bytes:
    name = _STATUS.get(status, "UNKNOWN")
    return orjson.dumps({"error": {"code": status, "message": message, "status": name}})


async def _send(
    stream: trio.abc.Stream, connection: h11.Connection, status: int, body: bytes
) -> None:
    headers = [
        (b"content-type", b"application/json; charset=UTF-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    data = connection.send(h11.Response(status_code=status, headers=headers))
    assert data is not None
    await stream.send_all(data + (connection.send(h11.Data(data=body)) or b""))
    await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
