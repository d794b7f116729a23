"""One connection to Gemini Live through its setup, behind the engine's ports.

:class:`GeminiUpstream` is the engine's :class:`~liveproxy.core.ports.Upstream`: it gets the
credentials' headers, dials (:mod:`.dial`), sends the setup and waits for ``setupComplete``.
Failures are translated once, here, into the engine's errors:
:class:`~liveproxy.contract.errors.UpstreamUnavailable` (retryable),
:class:`~liveproxy.contract.errors.UpstreamRejected` (upstream said no), and, for a connection
that was up, :class:`~liveproxy.core.ports.UpstreamClosed` with Gemini's close code and reason
(secrets removed). No other module of the proxy sees trio-websocket's errors.

Each connection's tasks (trio-websocket's reader, the keepalive) run in a cancel scope of their
own inside the nursery the caller lends: the connection outlives the call that opened it, and
:meth:`GeminiConnection.aclose` (or a failed or cancelled attempt) cancels that scope, so no
task or socket is left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson
import trio
from trio_websocket import CloseReason, ConnectionClosed, ConnectionRejected, HandshakeError

from liveproxy.contract.errors import (
    SessionError,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamUnavailable,
)
from liveproxy.contract.session_setup import upstream_setup_message
from liveproxy.core.ports import UpstreamClosed
from liveproxy.protocol import closes
from liveproxy.upstream.credentials import Headers
from liveproxy.upstream.dial import UpstreamDial, dial, wait_answer
from liveproxy.upstream.keepalive import keep_alive
from liveproxy.upstream.target import UpstreamTarget, redact

#: How long a graceful upstream close may take before the TCP connection is just closed.
CLOSE_TIMEOUT: Final = 1.0
#: The most of a refusal's text shown to the browser.
REFUSAL_TEXT_LIMIT: Final = 300
#: Why a connection whose pongs stopped counts as dropped.
NO_PONG: Final = "upstream stopped answering pings"

#: Handshake headers whose values are credentials (``x-goog-user-project`` is not one).
CREDENTIAL_HEADERS = frozenset({b"x-goog-api-key", b"authorization"})


class GeminiUpstream:
    """The engine's :class:`~liveproxy.core.ports.Upstream` for one target.

    ``on_open(+1)``/``on_open(-1)`` bracket the time each connection is open (the gauges).
    """

    def __init__(
        self, target: UpstreamTarget, on_open: Callable[[int], None] = lambda delta: None
    ) -> None:
        self.target = target
        self._on_open = on_open

    @property
    def transparent(self) -> bool:
        return self.target.transparent

    async def connect(
        self, nursery: trio.Nursery, setup: dict[str, Any], handle: str | None
    ) -> GeminiConnection:
        """See :meth:`liveproxy.core.ports.Upstream.connect`."""
        target = self.target
        message = upstream_setup_message(
            setup, target.model_path(setup["model"]), handle, transparent=target.transparent
        )
        # Inside the caller's deadline: a Vertex token refresh is part of the setup.
        headers = await target.credentials.headers()
        connection = GeminiConnection((*target.secrets, *_header_secrets(headers)))
        await nursery.start(connection.run_tasks)
        try:
            await connection.open(target, headers, message)
        except BaseException:
            await connection.aclose()
            raise
        self._on_open(1)
        connection.on_close = lambda: self._on_open(-1)
        return connection


class GeminiConnection:
    """One WebSocket to Gemini: the engine's :class:`~liveproxy.core.ports.UpstreamConnection`.

    Made by :meth:`GeminiUpstream.connect`; its tasks run under :meth:`run_tasks`.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.setup_complete = ""
        self.on_close: Callable[[], None] = lambda: None
        self._secrets = secrets
        self._tasks: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._ws: UpstreamDial | None = None
        self._pongs_stopped = False
        self._open = False
        self._closed = False

    async def run_tasks(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the connection's tasks until :meth:`aclose` cancels them."""
        with self._scope:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                task_status.started()
                await trio.sleep_forever()

    async def open(self, target: UpstreamTarget, headers: Headers, setup: str) -> None:
        """Dial, send ``setup`` and wait for ``setupComplete``.

        Raises:
            UpstreamUnavailable, UpstreamRejected, UpstreamFailed: as
                :meth:`GeminiUpstream.connect` says (the caller closes this connection).
        """
        assert self._tasks is not None
        try:
            ws = self._ws = await dial(self._tasks, target.url, headers, target.max_message_size)
            await wait_answer(ws)
            await ws.send_message(setup)
            first = await ws.get_message()
        except ConnectionRejected as exc:
            raise _rejection_error(exc, self._redact) from None
        except (OSError, HandshakeError) as exc:
            raise UpstreamUnavailable(f"cannot reach upstream: {exc}") from None
        except ConnectionClosed as exc:
            raise setup_close_error(exc.reason, self._redact) from None
        if not _is_setup_complete(first):
            raise UpstreamFailed("upstream answered the setup with another message")
        self.setup_complete = first.decode() if isinstance(first, bytes) else first
        self._open = True
        if target.ping_interval:
            self._tasks.start_soon(
                keep_alive, ws, target.ping_interval, target.pong_timeout, self._no_pong
            )

    async def receive(self) -> bytes | str:
        assert self._ws is not None
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            raise self._closed_error(exc.reason) from None

    async def send(self, message: str) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_message(message)
        except ConnectionClosed as exc:
            raise self._closed_error(exc.reason) from None

    async def aclose(self, code: int = closes.NORMAL) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        try:
            if ws is not None and self._open:  # an attempt that failed just drops its TCP
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await ws.aclose(code)
        finally:
            # Whatever happened (a refusal, a timeout, cancellation): no task left, no TCP leak.
            self._scope.cancel()
            self.on_close()
            if ws is not None:
                try:
                    await trio.aclose_forcefully(ws)
                finally:
                    await trio.aclose_forcefully(ws.stream)

    async def abort(self) -> None:
        if self._ws is not None:
            await trio.aclose_forcefully(self._ws.stream)

    async def _no_pong(self) -> None:
        """The keepalive's verdict: drop the connection; its reader sees a 1006."""
        self._pongs_stopped = True
        if self._ws is not None:
            await trio.aclose_forcefully(self._ws.stream)

    def _closed_error(self, reason: CloseReason | None) -> UpstreamClosed:
        if self._pongs_stopped:
            return UpstreamClosed(closes.ABNORMAL, NO_PONG)
        if reason is None:
            return UpstreamClosed(closes.ABNORMAL)
        return UpstreamClosed(reason.code, self._redact(reason.reason or ""))

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


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
