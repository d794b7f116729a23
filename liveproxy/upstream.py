"""The upstream side: where Gemini Live is, and one connection to it through its setup.

:func:`open_connection` dials with trio-websocket, sends the setup and waits for
``setupComplete``, all under one deadline (trio-websocket's own connect timeout does not cover an
upgrade that never gets an answer). Failures are translated once, here, into
:class:`~liveproxy.errors.UpstreamUnavailable` (retryable) or
:class:`~liveproxy.errors.UpstreamRejected` (upstream said no).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from liveproxy.config import Config
from liveproxy.credentials import Credentials
from liveproxy.errors import SessionError, UpstreamFailed, UpstreamRejected, UpstreamUnavailable
from liveproxy.protocol import closes

DEVELOPER_BASE = "wss://generativelanguage.googleapis.com"
#: How long a graceful upstream close may take before the TCP connection is just closed.
CLOSE_TIMEOUT = 1.0
#: trio-websocket's queue of received messages; a little slack lets its reader run ahead.
MESSAGE_QUEUE_SIZE = 4
#: One read takes a whole audio message (its 4 KiB default splits each in two reads).
RECEIVE_BUFFER_SIZE = 64 * 1024


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
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


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

    ws: WebSocketConnection
    setup_complete: bytes | str
    close_code: int = closes.NORMAL
    close_reason: str = ""


def setup_close_error(reason: CloseReason | None, redact: Callable[[str], str]) -> SessionError:
    """Map an upstream close during setup to the browser-facing error."""
    code = reason.code if reason else closes.ABNORMAL
    text = redact(reason.reason or "") if reason else ""
    detail = f"upstream closed the connection during setup ({code}{': ' + text if text else ''})"
    if code in (closes.INVALID_PAYLOAD, closes.POLICY) or "quota" in text.lower():
        return UpstreamRejected(text or detail)
    return UpstreamUnavailable(detail)


def _rejection_error(exc: ConnectionRejected) -> SessionError:
    status = exc.status_code
    detail = f"upstream refused the connection: HTTP {status}"
    if status in (400, 401, 403, 404):
        return UpstreamRejected(detail)
    return UpstreamUnavailable(detail)


def _is_setup_complete(message: bytes | str) -> bool:
    try:
        decoded = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return isinstance(decoded, dict) and "setupComplete" in decoded


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
    headers = await target.credentials.headers()
    failure: SessionError | None = None
    try:
        with connect_scope:
            async with trio.open_nursery() as nursery:
                ws: WebSocketConnection | None = None
                try:
                    try:
                        ws = await connect_websocket_url(
                            nursery,
                            target.url,
                            extra_headers=headers,
                            message_queue_size=MESSAGE_QUEUE_SIZE,
                            max_message_size=target.max_message_size,
                            receive_buffer_size=RECEIVE_BUFFER_SIZE,
                        )
                        await ws.send_message(setup)
                        first = await ws.get_message()
                    except (OSError, HandshakeError) as exc:
                        failure = UpstreamUnavailable(f"cannot reach upstream: {exc}")
                    except ConnectionClosed as exc:
                        failure = setup_close_error(exc.reason, target.redact)
                    else:
                        if not _is_setup_complete(first):
                            failure = UpstreamFailed(
                                "upstream answered the setup with another message"
                            )
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
                    # Whatever happened (a failure, a timeout, cancellation): no TCP leak.
                    if ws is not None:
                        await trio.aclose_forcefully(ws)
                    nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        rejected = group.exceptions[0]
        assert isinstance(rejected, ConnectionRejected)
        failure = _rejection_error(rejected)
    if connect_scope.cancelled_caught:
        failure = UpstreamUnavailable("upstream did not complete the setup in time")
    if failure is not None:
        raise failure


async def _close(connection: Connection) -> None:
    """Close gracefully if we can, within :data:`CLOSE_TIMEOUT`; the TCP stream closes anyway."""
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        await connection.ws.aclose(connection.close_code, connection.close_reason or None)
