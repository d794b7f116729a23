"""A minimal HTTP/1.1 client (trio + h11): one request per connection, as a browser's
``fetch`` to ``/api/auth`` costs the proxy a fresh connection in the worst case."""

from __future__ import annotations

from typing import Any

import h11
import orjson
import trio


class HttpError(Exception):
    """A request did not get a 2xx answer."""


async def request(
    host: str, port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """Send one request and return ``(status, body)`` once the whole answer has arrived."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{host}:{port}"), ("Connection", "close")]
        if body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        data = conn.send(h11.Request(method=method, target=path, headers=headers)) or b""
        if body is not None:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, b"".join(chunks)


async def session_token(host: str, port: int, duration: int) -> str:
    """``POST /api/auth`` and return the session token.

    Raises:
        HttpError: the proxy answered with something other than 200 and a token.
    """
    body = orjson.dumps({"session_duration": duration})
    status, answer = await request(host, port, "POST", "/api/auth", body)
    if status != 200:
        raise HttpError(f"POST /api/auth: {status} {answer[:200]!r}")
    parsed: Any = orjson.loads(answer)
    token = parsed.get("session_token") if isinstance(parsed, dict) else None
    if not isinstance(token, str):
        raise HttpError(f"POST /api/auth: no session_token in {answer[:200]!r}")
    return token
