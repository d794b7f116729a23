"""``serve()``: listen, take each TCP connection through the upgrade, hand it a session.

Every TCP connection gets a :class:`ConnectionRecord` and the next fault plan. Its handler
catches everything but cancellation, so one misbehaving connection never affects another.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import ssl
import time
from collections import deque
from functools import partial
from typing import NoReturn

import h11
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, wrap_server_stream

from liveproxy.emulator.catalog import ModelCatalog
from liveproxy.emulator.config import EmulatorConfig, Faults
from liveproxy.emulator.connection import Connection, Shared
from liveproxy.emulator.gate import GatedStream
from liveproxy.emulator.handshake import read_request, reject
from liveproxy.emulator.record import ConnectionRecord
from liveproxy.emulator.rest import MAX_HEAD_BYTES, is_rest, serve_rest
from liveproxy.emulator.store import HandleStore
from liveproxy.emulator.tokens import TokenBook
from liveproxy.emulator.transport import Transport

logger = logging.getLogger(__name__)

#: Largest client message accepted (video frames can exceed 1 MiB); bigger ones close 1009.
MAX_MESSAGE_BYTES = 32 * 2**20
#: Client messages trio-websocket buffers before it stops reading the socket.
MESSAGE_QUEUE = 8
RECEIVE_BUFFER = 64 * 1024
#: How long a client may take to send its upgrade request (trio time).
HANDSHAKE_TIMEOUT = 30.0


class Emulator:
    """A running emulator: where it listens, how to steer faults, what it has seen.

    ``connections`` lists a :class:`ConnectionRecord` for every accepted TCP connection, in
    order (with ``record_messages`` off, only those still open: a long-running emulator keeps
    nothing per closed connection); ``live_count`` counts those not yet closed.
    """

    def __init__(self, config: EmulatorConfig, port: int) -> None:
        self.config = config
        self.port = port
        scheme = "ws" if config.tls_cert is None else "wss"
        self.url = f"{scheme}://{_display_host(config.host)}:{port}"
        self.connections: list[ConnectionRecord] = []
        self.store = HandleStore(config.handle_ttl_seconds)
        #: The ephemeral tokens minted by ``POST /v1alpha/auth_tokens``.
        self.tokens = TokenBook()
        self._wall_offset = time.time() - trio.current_time()
        self._faults = config.faults
        self._queued: deque[Faults] = deque()
        self._live = 0
        self._accepted = 0
        self._grew = trio.Event()

    def wall_time(self) -> float:
        """Seconds since the epoch, as the emulator's tokens see them: wall time when it
        started, moved on by trio's clock (so a test's mock clock moves it too)."""
        return self._wall_offset + trio.current_time()

    @property
    def live_count(self) -> int:
        return self._live

    def set_faults(self, faults: Faults) -> None:
        """Use ``faults`` for connections accepted from now on (after any queued plans)."""
        self._faults = faults

    def queue_faults(self, *plans: Faults) -> None:
        """One-shot plans: the next connection takes the first, the one after the second...;
        then the default from :meth:`set_faults` applies again."""
        self._queued.extend(plans)

    async def wait_for_connections(self, count: int) -> None:
        """Wait until at least ``count`` connections have been accepted in total."""
        while self._accepted < count:
            await self._grew.wait()

    def _open_record(self) -> ConnectionRecord:
        faults = self._queued.popleft() if self._queued else self._faults
        record = ConnectionRecord(faults=faults)
        self.connections.append(record)
        self._accepted += 1
        self._live += 1
        self._grew.set()
        self._grew = trio.Event()
        return record

    def _close_record(self, record: ConnectionRecord) -> None:
        self._live -= 1
        if record.ended_by is None:
            record.ended_by = "dropped"
        record.closed.set()
        if not self.config.record_messages or record.rest:
            self.connections.remove(record)


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _ssl_context(config: EmulatorConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def serve(
    config: EmulatorConfig,
    *,
    task_status: trio.TaskStatus[Emulator] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run the emulator until cancelled; ``await nursery.start(serve, config)`` returns the
    :class:`Emulator` once it listens (port 0 picks a free port).

    Raises:
        OSError: the address cannot be bound (before it reports started).
        ssl.SSLError, OSError: the TLS certificate or key cannot be loaded.
    """
    context = _ssl_context(config)
    listeners: list[trio.SocketListener] | list[trio.SSLListener[trio.SocketStream]]
    if context is None:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        port = listeners[0].socket.getsockname()[1]
    else:
        listeners = await trio.open_ssl_over_tcp_listeners(
            config.port, context, host=config.host, https_compatible=True
        )
        transport = listeners[0].transport_listener
        assert isinstance(transport, trio.SocketListener)
        port = transport.socket.getsockname()[1]
    emulator = Emulator(config, port)
    models = ModelCatalog(config.models, config.extra_models, any_model=config.any_model)
    shared = Shared(config, emulator.store, models, emulator.tokens, emulator.wall_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio.serve_listeners, partial(_serve_stream, emulator, shared), listeners
        )
        task_status.started(emulator)
        await trio.sleep_forever()


async def _serve_stream(emulator: Emulator, shared: Shared, stream: trio.abc.Stream) -> None:
    """Handle one TCP connection; never raises but ``Cancelled``; always closes ``stream``."""
    record = emulator._open_record()
    gate = GatedStream(stream)
    try:
        if await _served_rest(emulator, shared, gate, record):
            return
        async with trio.open_nursery() as nursery:
            request = await _receive_request(nursery, gate)
            if request is not None:
                await _answer(request, gate, record, shared)
            nursery.cancel_scope.cancel()
    except* ConnectionClosed:
        pass  # the client left while its upgrade was being answered
    except* Exception:
        logger.exception("emulator failed on a connection to %s", record.path or "?")
    finally:
        await gate.drop()
        emulator._close_record(record)


async def _served_rest(
    emulator: Emulator, shared: Shared, gate: GatedStream, record: ConnectionRecord
) -> bool:
    """Answer the connection's request if it is a REST call (:mod:`~liveproxy.emulator.rest`),
    within :data:`HANDSHAKE_TIMEOUT`; False: it is not (what was read is left unread).

    A REST call's record leaves ``connections`` when it closes: they list Live connections.
    """
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        if not is_rest(await gate.peek_line(MAX_HEAD_BYTES)):
            return False
        record.rest = True
        with contextlib.suppress(h11.RemoteProtocolError):  # not HTTP: dropped unanswered
            await serve_rest(gate, shared.tokens, shared.config.api_keys, emulator.wall_time)
    return True  # answered, or silent for too long: dropped


async def _receive_request(nursery: trio.Nursery, gate: GatedStream) -> WebSocketRequest | None:
    """The upgrade request, or None if the client left, sent something else (trio-websocket
    then answers 400 and closes) or took too long.

    trio-websocket's reader task is started in ``nursery`` and outlives this call.
    """
    request = None
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        async with trio.open_nursery() as watch:
            watch.start_soon(_cancel_when_gone, gate, watch.cancel_scope)
            request = await wrap_server_stream(
                nursery,
                gate,
                message_queue_size=MESSAGE_QUEUE,
                max_message_size=MAX_MESSAGE_BYTES,
                receive_buffer_size=RECEIVE_BUFFER,
            )
            watch.cancel_scope.cancel()
    return request


async def _cancel_when_gone(gate: GatedStream, scope: trio.CancelScope) -> None:
    await gate.finished.wait()
    scope.cancel()


async def _answer(
    request: WebSocketRequest, gate: GatedStream, record: ConnectionRecord, shared: Shared
) -> None:
    route = read_request(request, record)
    faults = record.faults
    if faults.hang_upgrade:
        await gate.finished.wait()
        return
    if faults.reject_status is not None or route is None:
        record.ended_by = "server"
        await reject(request, faults.reject_status or 404)
        return
    ws = await request.accept()
    transport = Transport(
        ws, gate, record, binary=shared.config.send_binary, keep=shared.config.record_messages
    )
    await Connection(transport, record, route, shared).run()
