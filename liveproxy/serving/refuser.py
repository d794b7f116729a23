"""The supervisor's own answer on an exited worker's listening socket while the server drains.

The supervisor keeps every worker's ``SO_REUSEPORT`` socket open (so connections queued during
a crash-restart wait for the restarted worker instead of being reset). Once draining, an exited
worker is not restarted, and the kernel keeps hashing new connections to its socket: without an
answer they would wait until the whole drain ends. :func:`refuse` answers each with what a
draining worker answers, HTTP 503, and closes it:

- ``/api/ready`` (any method): ``not_ready`` with the message ``draining``, as ``GET /api/ready``
  of a draining worker, so a load balancer sees the same answer from every socket;
- anything else, WebSocket upgrades included: ``shutting_down``, as ``POST /api/auth`` and the
  ``/ws`` upgrade of a draining worker (a proxy in front can try another instance).

Everything a client controls is bounded: the request head (:data:`MAX_HEAD_BYTES`, else 400),
a connection's time (:data:`CONNECTION_SECONDS`, then it is closed, answered or not) and the
connections served at once (:data:`MAX_CONNECTIONS`; more are closed at once).
"""

from __future__ import annotations

import logging
import socket
from typing import Final

import h11
import trio

from liveproxy.contract.codec import to_json
from liveproxy.contract.payloads import ApiError, ErrorResponse

log = logging.getLogger("liveproxy.supervisor")

MAX_HEAD_BYTES: Final = 8192
CONNECTION_SECONDS: Final = 3.0
MAX_CONNECTIONS: Final = 64
#: After the answer, how long the rest of a request (a body) is read and dropped, so that
#: closing with it unread does not reset the connection before the client has read the answer.
LINGER_SECONDS: Final = 1.0
READY_PATH: Final = b"/api/ready"
NOT_READY: Final = to_json(ErrorResponse(ApiError("not_ready", "draining")))
SHUTTING_DOWN: Final = to_json(
    ErrorResponse(ApiError("shutting_down", "the server is shutting down"))
)
BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def refuse(
    sock: socket.socket,
    *,
    max_connections: int = MAX_CONNECTIONS,
    connection_seconds: float = CONNECTION_SECONDS,
) -> None:
    """Answer every connection to the listening ``sock`` with 503 until cancelled.

    Accepts on a duplicate of ``sock``, closed on return; ``sock`` itself stays open. Each
    connection is closed after its answer, after ``connection_seconds``, or at once beyond
    ``max_connections`` at a time. A client's bytes never raise out of here: a connection that
    fails is closed, and an unexpected failure is logged by its type only.
    """
    slots = trio.CapacityLimiter(max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.move_on_after(connection_seconds):
                await _answer(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception as exc:  # one client never ends the refuser, by design
            log.error("a refused connection failed: %s", type(exc).__name__)
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    async with trio.SocketListener(trio.socket.from_stdlib_socket(sock.dup())) as listener:
        await trio.serve_listeners(handle, [listener])


async def _answer(stream: trio.SocketStream) -> None:
    """Read one request head and answer it 503 (400 if it is not HTTP or too large)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            await stream.send_all(BAD_REQUEST)
            return
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(4096))
        elif isinstance(event, h11.Request):
            break
        else:  # the client left
            return
    body = NOT_READY if event.target.partition(b"?")[0] == READY_PATH else SHUTTING_DOWN
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    data = connection.send(h11.Response(status_code=503, headers=headers)) or b""
    if event.method != b"HEAD":
        data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
    await stream.send_eof()
    with trio.move_on_after(LINGER_SECONDS):
        while await stream.receive_some(4096):
            pass
