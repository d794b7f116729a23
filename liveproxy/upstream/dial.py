"""Dialing Gemini with trio-websocket, seeing the answer to the upgrade as soon as it comes.

trio-websocket 0.12.2 (pinned) raises a refusal only once its body is complete and never wakes
the connecting task when the server hangs up unanswered; :class:`UpstreamDial` subclasses its
connection to record the answer, and :func:`wait_answer` decides at once.
"""

from __future__ import annotations

import functools
import ssl
from urllib.parse import urlsplit

import h11
import trio
import wsproto.utilities
from trio_websocket import ConnectionRejected, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData

from liveproxy.contract.errors import UpstreamUnavailable
from liveproxy.upstream.credentials import Headers

#: trio-websocket's queue of received messages; a little slack lets its reader run ahead.
MESSAGE_QUEUE_SIZE = 4
#: One read takes a whole audio message (its 4 KiB default splits each in two reads).
RECEIVE_BUFFER_SIZE = 64 * 1024
#: Once a refusal's status line and headers are in, how long its body may take: the body only
#: adds detail to the error, and a body that never ends must not hold the session to its deadline.
REFUSAL_BODY_GRACE = 0.2
#: The most of a refusal's body that is kept, and the most of its text shown to the browser.
REFUSAL_BODY_LIMIT = 16 * 1024


class UpstreamDial(WebSocketConnection):
    """trio-websocket's client connection, which tells as soon as its upgrade is answered.

    trio-websocket raises :class:`ConnectionRejected` (out of its reader task) only once a
    refusal's body is complete, and never wakes the task waiting in ``connect_websocket*`` when
    the server hangs up without answering: against a server that keeps the socket open, both
    held the attempt until its deadline. Here the reader only records: :attr:`answered` is set on
    the response's status line and headers (a 101 or a refusal) and when the reader stops, and
    :func:`wait_answer` decides. A refusal's body is kept up to :data:`REFUSAL_BODY_LIMIT`.
    """

    def __init__(
        self, stream: trio.abc.Stream, *, host: str, path: str, headers: Headers, max_size: int
    ) -> None:
        super().__init__(
            stream,
            WSConnection(ConnectionType.CLIENT),
            host=host,
            path=path,
            client_extra_headers=headers,
            message_queue_size=MESSAGE_QUEUE_SIZE,
            max_message_size=max_size,
            receive_buffer_size=RECEIVE_BUFFER_SIZE,
        )
        self.stream = stream
        self.accepted = False
        self.answered = trio.Event()
        self.refusal: ConnectionRejected | None = None
        self.refusal_complete = trio.Event()
        self.garbled: Exception | None = None

    async def _handle_accept_connection_event(self, event: AcceptConnection) -> None:
        await super()._handle_accept_connection_event(event)
        self.accepted = True
        self.answered.set()

    async def _handle_reject_connection_event(self, event: RejectConnection) -> None:
        self.refusal = ConnectionRejected(
            event.status_code, tuple(event.headers), b"" if event.has_body else None
        )
        self.answered.set()
        if not event.has_body:
            self.refusal_complete.set()

    async def _handle_reject_data_event(self, event: RejectData) -> None:
        refusal = self.refusal
        if refusal is None or refusal.body is None:  # pragma: no cover - wsproto orders these
            return
        refusal.body += event.data[: REFUSAL_BODY_LIMIT - len(refusal.body)]
        if event.body_finished or len(refusal.body) >= REFUSAL_BODY_LIMIT:
            self.refusal_complete.set()

    async def _reader_task(self) -> None:
        try:
            await super()._reader_task()
        except (h11.ProtocolError, wsproto.utilities.ProtocolError) as exc:
            # An answer (or a refusal's body) that is not HTTP: trio-websocket then fails trying
            # to send the client a server's refusal. Until an upgrade is accepted, that is this
            # connection's failure, not a bug: :func:`wait_answer` reports it.
            if self.accepted:
                raise
            self.garbled = exc
        finally:
            self.answered.set()
            self.refusal_complete.set()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One default client context for every ``wss://`` dial (building one loads the CA store)."""
    return ssl.create_default_context()


async def dial(
    nursery: trio.Nursery, url: str, headers: Headers, max_message_size: int
) -> UpstreamDial:
    """Open the TCP (and TLS) connection and start the upgrade; its reader runs in ``nursery``.

    Raises:
        OSError: the host cannot be resolved or reached.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    stream: trio.abc.Stream
    if secure:
        stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=_tls_context(), https_compatible=True
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    host_header = f"[{host}]" if ":" in host else host
    if port not in (80, 443):
        host_header = f"{host_header}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ws = UpstreamDial(
        stream, host=host_header, path=path, headers=headers, max_size=max_message_size
    )
    nursery.start_soon(ws._reader_task)
    return ws


async def wait_answer(ws: UpstreamDial) -> None:
    """Wait for the answer to the upgrade; return once it is accepted.

    Raises:
        ConnectionRejected: refused, with as much of the body as came within
            :data:`REFUSAL_BODY_GRACE` of the status line.
        UpstreamUnavailable: the connection ended before any answer, or the answer is not HTTP.
    """
    await ws.answered.wait()
    if ws.refusal is not None:
        with trio.move_on_after(REFUSAL_BODY_GRACE):
            await ws.refusal_complete.wait()
        raise ws.refusal
    if ws.garbled is not None:
        raise UpstreamUnavailable("upstream's answer to the upgrade is not valid HTTP")
    if not ws.accepted:
        raise UpstreamUnavailable("upstream closed the connection before answering the upgrade")
