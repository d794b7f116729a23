"""A minimal HTTP/1.1 client for tests (trio + h11, one request per connection)."""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import h11
import orjson
import trio


@attrs.frozen
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    local_address: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one request (with extra ``headers``, e.g. ``Origin``) and read the whole response.

    ``local_address`` (e.g. ``127.0.0.2``) makes the request come from another client;
    ``ssl_context`` makes it an HTTPS request (the certificate is checked against ``host``).
    """
    tcp = await trio.open_tcp_stream(host, port, local_address=local_address)
    stream: trio.abc.Stream = tcp
    if ssl_context is not None:
        stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        sent = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
        if body is not None:
            sent |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
        data = conn.send(h11.Request(method=method, target=path, headers=list(sent.items())))
        if body is not None:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        status = 0
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return HttpResponse(status, response_headers, b"".join(chunks))
