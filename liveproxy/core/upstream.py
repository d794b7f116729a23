"""The upstream side: where Gemini Live is, and one connection to it through its setup.

:func:`open_connection` gets the credentials' headers, dials (:mod:`liveproxy.core.dial`), sends
the setup and waits for ``setupComplete``, all under one deadline (trio-websocket's own connect
timeout does not cover an upgrade that never gets an answer, nor a token refresh). Failures are
translated once, here, into :class:`~liveproxy.contract.errors.UpstreamUnavailable` (retryable) or
:class:`~liveproxy.contract.errors.UpstreamRejected` (upstream said no).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable
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
)

from liveproxy.config import Config
from liveproxy.contract.errors import (
    SessionError,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamUnavailable,
)
from liveproxy.core.credentials import Credentials, Headers
from liveproxy.core.dial import UpstreamDial, dial, wait_answer
from liveproxy.core.ports import UpstreamSocket
from liveproxy.protocol import closes

DEVELOPER_BASE = "wss://generativelanguage.googleapis.com"
#: How long a graceful upstream close may take before the TCP connection is just closed.
CLOSE_TIMEOUT = 1.0
#: The most of a refusal's text shown to the browser.
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
            ws: UpstreamDial | None = None
            try:
                try:
                    ws = await dial(nursery, target.url, headers, target.max_message_size)
                    await wait_answer(ws)
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
