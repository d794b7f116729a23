"""What the proxy counts for Prometheus, and the auth route's answers as results.

Always prometheus_client's multiprocess mode, so one process and many count the same way: each
process that counts writes its values to files in one directory (``PROMETHEUS_MULTIPROC_DIR``),
and whoever serves ``METRICS_BIND`` adds them up at each scrape
(:mod:`liveproxy.serving.metrics_listener`, which also owns the directory). prometheus_client
picks its storage when it is imported, so it is imported only in functions, once the directory
is set in this process's environment. Without ``METRICS_BIND`` it is never imported and
:data:`NO_METRICS` does nothing.

What is counted, and when (never per frame: each count is a write to a memory-mapped file):

- ``liveproxy_sessions_live``: sessions running (a token spent, not yet ended).
- ``liveproxy_sessions_total{reason}``: sessions that ended, by ``sessionEnd`` reason or error
  code, when the outcome is known (one per ``session_ended`` log line: a session whose route
  is cancelled, or whose worker is killed, has no outcome and is not in it). Sockets refused
  before a session starts are not sessions: they are ``liveproxy_sockets_refused_total{reason}``
  (``forbidden_origin``, ``shutting_down``, ``at_capacity``, ``state_unavailable``,
  ``unauthorized``).
- ``liveproxy_session_setup_seconds``: from the socket's open (accepted) to its
  ``setupComplete`` queued for the browser, observed then; it includes the token check and the
  browser's time to send its setup. Sessions that never get one are not observed.
- ``liveproxy_upstream_reconnects_total``, ``liveproxy_slow_clients_total``: added when the
  session ends.
- ``liveproxy_tokens_total{result}``: every answer to ``POST`` on an auth path: ``issued``, or
  the error code the client got (``rate_limited``, ``forbidden_origin``,
  ``payload_too_large``...), read from the response by :class:`TokenResults`. Requests that
  Hypercorn itself refuses (malformed HTTP) never reach it and are not counted.
- ``liveproxy_tool_calls_total{tool, result}``, ``liveproxy_tool_seconds{tool}``: each server
  tool call when it ends (tool names are the operator's, a bounded set).
- ``liveproxy_tokens_used_total{model, kind, modality}``, ``liveproxy_audio_seconds_total
  {direction}`` (``in``: from browsers, ``out``: to them): what each session's socket used
  (:mod:`liveproxy.core.usage`), added when it ends, cancelled or not.
- ``liveproxy_budget_refusals_total{scope}``: sign-ins refused (429 ``budget_exhausted``) and
  sessions ended (``budget_exhausted``) because a ``client`` or ``total`` budget was used up.
- ``liveproxy_frames_total{direction}``: WebSocket messages received from (``browser_in``) and
  sent to (``browser_out``) browsers on the session paths, refused sockets' too; each socket's
  counts are added when it closes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from liveproxy.contract.endings import Outcome, outcome_code
from liveproxy.contract.errors import SlowClient
from liveproxy.core.usage import (
    AUDIO_IN_BYTES_PER_SECOND,
    AUDIO_OUT_BYTES_PER_SECOND,
    UsageTotals,
)
from liveproxy.web.asgi import ASGIMessage, Receive, Send

#: The environment variable prometheus_client reads (and worker processes inherit).
DIRECTORY_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds from a session's start to ``setupComplete``.
SETUP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Seconds a server tool call took.
TOOL_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The most of an auth error response read for its code.
MAX_SNIFFED_BYTES: Final = 4096
_CODE: Final = re.compile(r"[a-z0-9_]{1,64}")


class Metrics:
    """What the proxy counts; this base class counts nothing (``METRICS_BIND`` unset)."""

    #: Where this process's values are written (None: nowhere).
    directory: str | None = None

    def session_started(self) -> None:
        """A session started (a token was spent)."""

    def session_closed(self) -> None:
        """A session is over (it is no longer live); called even when it is cancelled."""

    def session_ended(self, outcome: Outcome, reconnects: int) -> None:
        """A session ended with ``outcome``, after ``reconnects`` upstream resumes."""

    def setup_completed(self, seconds: float) -> None:
        """A session got its ``setupComplete``, ``seconds`` after it started."""

    def socket_refused(self, reason: str) -> None:
        """A browser socket was closed before a session started."""

    def token_result(self, result: str) -> None:
        """The auth route answered: ``issued`` or an error code."""

    def socket_frames(self, browser_in: int, browser_out: int) -> None:
        """A browser socket closed after these many messages in each direction."""

    def tool_finished(self, tool: str, result: str, seconds: float) -> None:
        """A server tool call ended with ``result`` after ``seconds``."""

    def session_usage(self, model: str, usage: UsageTotals) -> None:
        """A session's socket, now over, used ``usage`` of ``model``."""

    def budget_refused(self, scope: str) -> None:
        """A budget of ``scope`` (``client``, ``total``) refused a sign-in or ended a session."""


#: The metrics of a process without ``METRICS_BIND``.
NO_METRICS: Final = Metrics()


class PrometheusMetrics(Metrics):
    """Counts into prometheus_client's files in ``directory`` (this process's share).

    Raises:
        RuntimeError: prometheus_client was imported before ``directory`` was set as
            ``PROMETHEUS_MULTIPROC_DIR`` (its values would stay in this process).
    """

    def __init__(self, directory: str) -> None:
        os.environ[DIRECTORY_ENV] = directory
        from prometheus_client import Counter, Gauge, Histogram, values

        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError("prometheus_client was imported before its directory was set")
        self.directory = directory
        self._live = Gauge(
            "liveproxy_sessions_live",
            "Sessions running now.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self._sessions = Counter(
            "liveproxy_sessions",
            "Sessions ended, by sessionEnd reason or error code.",
            ["reason"],
            registry=None,
        )
        self._setup = Histogram(
            "liveproxy_session_setup_seconds",
            "Seconds from a session's start to its setupComplete.",
            buckets=SETUP_BUCKETS,
            registry=None,
        )
        self._reconnects = Counter(
            "liveproxy_upstream_reconnects", "Upstream connections resumed.", registry=None
        )
        self._slow = Counter(
            "liveproxy_slow_clients",
            "Sessions ended because the browser read too slowly.",
            registry=None,
        )
        self._refused = Counter(
            "liveproxy_sockets_refused",
            "Browser sockets closed before a session started, by reason.",
            ["reason"],
            registry=None,
        )
        self._tokens = Counter(
            "liveproxy_tokens",
            "Answers of the auth route: issued, or the error code.",
            ["result"],
            registry=None,
        )
        frames = Counter(
            "liveproxy_frames",
            "WebSocket messages from and to browsers.",
            ["direction"],
            registry=None,
        )
        self._tool_calls = Counter(
            "liveproxy_tool_calls",
            "Server tool calls ended, by tool and result (ok, error, timeout, too_large, "
            "cancelled, busy).",
            ["tool", "result"],
            registry=None,
        )
        self._tool_seconds = Histogram(
            "liveproxy_tool_seconds",
            "Seconds a server tool call took, by tool.",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=None,
        )
        self._tokens_used = Counter(
            "liveproxy_tokens_used",
            "Tokens sessions used, by model, token kind and modality.",
            ["model", "kind", "modality"],
            registry=None,
        )
        self._audio_seconds = Counter(
            "liveproxy_audio_seconds",
            "Seconds of audio sessions streamed: in (from browsers) and out (to them).",
            ["direction"],
            registry=None,
        )
        self._budget_refusals = Counter(
            "liveproxy_budget_refusals",
            "Sign-ins refused and sessions ended because a budget was used up, by scope.",
            ["scope"],
            registry=None,
        )
        self._frames_in = frames.labels("browser_in")
        self._frames_out = frames.labels("browser_out")
        self._tokens.labels("issued")  # shown as 0 before the first one

    def session_started(self) -> None:
        self._live.inc()

    def session_closed(self) -> None:
        self._live.dec()

    def session_ended(self, outcome: Outcome, reconnects: int) -> None:
        self._sessions.labels(outcome_code(outcome)).inc()
        if reconnects:
            self._reconnects.inc(reconnects)
        if isinstance(outcome, SlowClient):
            self._slow.inc()

    def setup_completed(self, seconds: float) -> None:
        self._setup.observe(seconds)

    def socket_refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def token_result(self, result: str) -> None:
        self._tokens.labels(result).inc()

    def tool_finished(self, tool: str, result: str, seconds: float) -> None:
        self._tool_calls.labels(tool, result).inc()
        self._tool_seconds.labels(tool).observe(seconds)

    def session_usage(self, model: str, usage: UsageTotals) -> None:
        for kind, by_modality in usage.tokens.items():
            for modality, tokens in by_modality.items():
                self._tokens_used.labels(model, kind, modality).inc(tokens)
        if usage.audio_in_bytes:
            self._audio_seconds.labels("in").inc(usage.audio_in_bytes / AUDIO_IN_BYTES_PER_SECOND)
        if usage.audio_out_bytes:
            self._audio_seconds.labels("out").inc(
                usage.audio_out_bytes / AUDIO_OUT_BYTES_PER_SECOND
            )

    def budget_refused(self, scope: str) -> None:
        self._budget_refusals.labels(scope).inc()

    def socket_frames(self, browser_in: int, browser_out: int) -> None:
        if browser_in:
            self._frames_in.inc(browser_in)
        if browser_out:
            self._frames_out.inc(browser_out)


# -- the auth route's answers ----------------------------------------------------------------


class TokenResults:
    """ASGI middleware: counts every answer to ``POST`` on ``paths`` (outside the middleware
    that can refuse one: origins, bodies), as ``issued`` or the ``error.code`` it carries."""

    def __init__(self, app: Any, paths: frozenset[str], count: Callable[[str], None]) -> None:
        self._app = app
        self._paths = paths
        self._count = count

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in self._paths
        ):
            await self._app(scope, receive, send)
            return
        status = 0
        body = b""
        counted = False

        async def send_counted(message: ASGIMessage) -> None:
            nonlocal status, body, counted
            if message["type"] == "http.response.start":
                status = int(message.get("status", 0))
            elif message["type"] == "http.response.body" and not counted:
                body = (body + bytes(message.get("body", b"")))[:MAX_SNIFFED_BYTES]
                more = message.get("more_body", False)
                if status == 200 or not more or len(body) >= MAX_SNIFFED_BYTES:
                    counted = True
                    self._count("issued" if status == 200 else error_code(status, body))
            await send(message)

        await self._app(scope, receive, send_counted)


def error_code(status: int, body: bytes) -> str:
    """The ``error.code`` of an error response, or ``http_<status>`` (always a short name)."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and _CODE.fullmatch(code):
        return code
    return f"http_{status}"
