"""The upstream side: where Gemini Live is, and one connection to it through its setup.

:func:`open_connection` gets the credentials' headers, dials with trio-websocket, sends the setup
and waits for ``setupComplete``, all under one deadline (trio-websocket's own connect timeout does
not cover an upgrade that never gets an answer, nor a token refresh). Failures are translated
once, here, into :class:`~liveproxy.errors.UpstreamUnavailable` (retryable) or
:class:`~liveproxy.errors.UpstreamRejected` (upstream said no).
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import h11
import orjson
import trio
import wsproto.utilities
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData

from liveproxy.config import Config
from liveproxy.credentials import Credentials, Headers
from liveproxy.errors import SessionError, UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from liveproxy.ports import UpstreamSocket
from liveproxy.protocol import closes

DEVELOPER_BASE = "wss://generativelanguage.googleapis.com"
#: How long a graceful upstream close may take before the TCP connection is just closed.
CLOSE_TIMEOUT = 1.0
#: trio-websocket's queue of received messages; a little slack lets its reader run ahead.
MESSAGE_QUEUE_SIZE = 4
#: One read takes a whole audio message (its 4 KiB default splits each in two reads).
RECEIVE_BUFFER_SIZE = 64 * 1024
#: Once a refusal's status line and headers are in, how long its body may take: the body only
#: adds detail to the error, and a body that never ends must not hold the session to its deadline.
REFUSAL_BODY_GRACE = 0.2
#: The most of a refusal's body that is kept, and the most of its text shown to the browser.
REFUSAL_BODY_LIMIT = 16 * 1024
REFUSAL_TEXT_LIMIT = 300


@attrs.frozen
class UpstreamTarget:
    """Where and as whom the proxy connects upstream."""

    url: str
    model: str
    credentials: Credentials
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)
    max_message_size: int = 32 * 1024 * 1024

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        return _redact(text, self.secrets)


def _redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first: a secret that contains another is replaced whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


#: Handshake headers whose values are credentials (``x-goog-user-project`` is not one).
CREDENTIAL_HEADERS = frozenset({b"x-goog-api-key", b"authorization"})


def _header_secrets(headers: Headers) -> list[str]:
    """The credentials in handshake ``headers`` (whole values, and a bearer's bare token)."""
    found: list[str] = []
    for name, raw in headers:
        if name.lower() not in CREDENTIAL_HEADERS:
            continue
        value = raw.decode("latin-1")
        found.append(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "token"):
            found.append(token.strip())
    return found


def upstream_url(config: Config) -> str:
    """The Live endpoint for ``config``: Developer API or Vertex AI, or ``UPSTREAM_URL``."""
    if config.backend == "vertex":
        version = config.api_version or "v1"
        path = f"/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
        host = (
            "aiplatform.googleapis.com"
            if config.location == "global"
            else f"{config.location}-aiplatform.googleapis.com"
        )
        base = f"wss://{host}"
    else:
        version = config.api_version or "v1beta"
        path = f"/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
        base = DEVELOPER_BASE
    if config.upstream_url:
        if urlsplit(config.upstream_url).path not in ("", "/"):
            return config.upstream_url
        base = config.upstream_url.rstrip("/")
    return base + path


def model_path(config: Config, model: str) -> str:
    """``model`` as ``setup.model`` wants it for the configured backend."""
    if config.backend == "vertex":
        if model.startswith("projects/"):
            return model
        if not model.startswith("publishers/"):
            model = f"publishers/google/models/{model}"
        return f"projects/{config.project_id}/locations/{config.location}/{model}"
    if model.startswith(("models/", "tunedModels/")):
        return model
    return f"models/{model}"


@attrs.define
class Connection:
    """An upstream connection whose setup completed; closed by :func:`open_connection`."""

    ws: UpstreamSocket
    setup_complete: bytes | str
    close_code: int = closes.NORMAL
    close_reason: str = ""


def setup_close_error(reason: CloseReason | None, redact: Callable[[str], str]) -> SessionError:
    """Map an upstream close during setup to the browser-facing error."""
    code = reason.code if reason else closes.ABNORMAL
    text = redact(reason.reason or "") if reason else ""
    detail = f"upstream closed the connection during setup ({code}{': ' + text if text else ''})"
    if closes.rules_out_resuming(code, text):
        return UpstreamRejected(text or detail)
    return UpstreamUnavailable(detail)


def _rejection_error(exc: ConnectionRejected, redact: Callable[[str], str]) -> SessionError:
    """Map an HTTP refusal of the upgrade to the browser-facing error, with upstream's reason."""
    status = exc.status_code
    detail = f"upstream refused the connection: HTTP {status}"
    text = redact(_refusal_text(exc))
    if len(text) > REFUSAL_TEXT_LIMIT:
        text = text[: REFUSAL_TEXT_LIMIT - 1] + "\u2026"
    if text:
        detail = f"{detail}: {text}"
    if status in (400, 401, 403, 404):
        return UpstreamRejected(detail)
    return UpstreamUnavailable(detail)


def _refusal_text(exc: ConnectionRejected) -> str:
    """The reason in a refusal's body: Google's ``error.message``, or plain text (not HTML)."""
    if not exc.body:
        return ""
    try:
        decoded = orjson.loads(exc.body)
    except orjson.JSONDecodeError:
        content_type = next((v for k, v in exc.headers if k.lower() == b"content-type"), b"")
        if b"html" in content_type.lower():
            return ""
        text = exc.body.decode("utf-8", "replace")
    else:
        error = decoded.get("error") if isinstance(decoded, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str):
            return ""
        text = message
    return " ".join(text.split())


def _is_setup_complete(message: bytes | str) -> bool:
    try:
        decoded = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return isinstance(decoded, dict) and "setupComplete" in decoded


class _UpstreamSocket(WebSocketConnection):
    """trio-websocket's client connection, which tells as soon as its upgrade is answered.

    trio-websocket raises :class:`ConnectionRejected` (out of its reader task) only once a
    refusal's body is complete, and never wakes the task waiting in ``connect_websocket*`` when
    the server hangs up without answering: against a server that keeps the socket open, both
    held the attempt until its deadline. Here the reader only records: :attr:`answered` is set on
    the response's status line and headers (a 101 or a refusal) and when the reader stops, and
    :func:`_wait_answer` decides. A refusal's body is kept up to :data:`REFUSAL_BODY_LIMIT`.
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
            # connection's failure, not a bug: :func:`_wait_answer` reports it.
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


async def _dial(nursery: trio.Nursery, target: UpstreamTarget, headers: Headers) -> _UpstreamSocket:
    """Open the TCP (and TLS) connection and start the upgrade; its reader runs in ``nursery``.

    Raises:
        OSError: the host cannot be resolved or reached.
    """
    parts = urlsplit(target.url)
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
    ws = _UpstreamSocket(
        stream, host=host_header, path=path, headers=headers, max_size=target.max_message_size
    )
    nursery.start_soon(ws._reader_task)
    return ws


async def _wait_answer(ws: _UpstreamSocket) -> None:
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


@asynccontextmanager
async def open_connection(
    target: UpstreamTarget,
    setup: str,
    connect_scope: trio.CancelScope,
    *,
    on_open: Callable[[int], None] = lambda delta: None,
) -> AsyncIterator[Connection]:
    """Connect, send ``setup`` and wait for ``setupComplete``, all inside ``connect_scope``.

    The caller gives ``connect_scope`` its deadline (the setup timeout) and may cancel it to
    abandon the attempt; either way :class:`UpstreamUnavailable` is raised.

    Yields the open :class:`Connection`; on exit it is closed with ``close_code`` and
    ``close_reason`` (graceful, bounded by :data:`CLOSE_TIMEOUT`) and its TCP connection is
    gone. ``on_open(+1)``/``on_open(-1)`` bracket the time it is open (for the gauges).

    Raises:
        UpstreamUnavailable: unreachable, refused with a retryable status, closed or silent
            during setup.
        UpstreamRejected: refused the credentials, the model or the setup.
        UpstreamFailed: answered the setup with something other than ``setupComplete``.
    """
    failure: SessionError | None = None
    with connect_scope:
        # Inside the deadline: a Vertex token refresh is part of the setup (and cancellable).
        headers = await target.credentials.headers()
        secrets = (*target.secrets, *_header_secrets(headers))

        def redact(text: str) -> str:
            return _redact(text, secrets)

        async with trio.open_nursery() as nursery:
            ws: _UpstreamSocket | None = None
            try:
                try:
                    ws = await _dial(nursery, target, headers)
                    await _wait_answer(ws)
                    await ws.send_message(setup)
                    first = await ws.get_message()
                except ConnectionRejected as exc:
                    failure = _rejection_error(exc, redact)
                except SessionError as exc:
                    failure = exc
                except (OSError, HandshakeError) as exc:
                    failure = UpstreamUnavailable(f"cannot reach upstream: {exc}")
                except ConnectionClosed as exc:
                    failure = setup_close_error(exc.reason, redact)
                else:
                    if not _is_setup_complete(first):
                        failure = UpstreamFailed("upstream answered the setup with another message")
                if failure is None and ws is not None:
                    connect_scope.deadline = math.inf
                    connection = Connection(ws, first)
                    on_open(1)
                    try:
                        yield connection
                    finally:
                        on_open(-1)
                        await _close(connection)
            finally:
                # Whatever happened (a refusal, a timeout, cancellation): no TCP leak.
                if ws is not None:
                    await trio.aclose_forcefully(ws)
                    await trio.aclose_forcefully(ws.stream)
                nursery.cancel_scope.cancel()
    if connect_scope.cancelled_caught:
        failure = UpstreamUnavailable("upstream did not complete the setup in time")
    if failure is not None:
        raise failure


async def _close(connection: Connection) -> None:
    """Close gracefully if we can, within :data:`CLOSE_TIMEOUT`; the TCP stream closes anyway."""
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await connection.ws.aclose(connection.close_code, connection.close_reason or None)
