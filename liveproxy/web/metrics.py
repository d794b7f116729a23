"""Prometheus metrics on ``METRICS_BIND``, aggregated over all the workers of a host.

Always prometheus_client's multiprocess mode, so one process and many count the same way: each
process that counts writes its values to files in one directory (``PROMETHEUS_MULTIPROC_DIR``)
and whoever serves ``METRICS_BIND`` (the supervisor with ``WORKERS`` > 1, else the server
itself) adds them up at each scrape. The directory is the operator's ``PROMETHEUS_MULTIPROC_DIR``
(emptied of old files at start), or a private one removed at exit. A worker that exits is
marked dead: its share of ``liveproxy_sessions_live`` (``livesum``) goes, its totals stay.

prometheus_client picks its storage when it is imported, so it is imported only here, in
functions, once the directory is set in this process's environment. Without ``METRICS_BIND``
it is never imported and :data:`NO_METRICS` does nothing.

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
- ``liveproxy_frames_total{direction}``: WebSocket messages received from (``browser_in``) and
  sent to (``browser_out``) browsers on the session paths, refused sockets' too; each socket's
  counts are added when it closes.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

import hypercorn.config
import hypercorn.trio
import orjson
import trio
from hypercorn.typing import ASGIFramework

from liveproxy.contract.endings import Outcome, outcome_code
from liveproxy.contract.errors import SlowClient
from liveproxy.web import hypercorn_fixes
from liveproxy.web.asgi import ASGIMessage, Receive, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("liveproxy.metrics")

#: The environment variable prometheus_client reads (and worker processes inherit).
DIRECTORY_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds from a session's start to ``setupComplete``.
SETUP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: The listener's bounds: a request head's size, the time it may take to arrive (from the
#: connection, or the previous answer), the silence a connection may keep, how long what it
#: is sent may go unacknowledged (a client that stopped reading), its listen backlog, and the
#: scrapes run at once.
MAX_HEAD_BYTES: Final = 8192
KEEP_ALIVE_SECONDS: Final = 5.0
READ_TIMEOUT_SECONDS: Final = 5
SEND_TIMEOUT_SECONDS: Final = 10.0
BACKLOG: Final = 64
MAX_SCRAPES: Final = 2
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

    def socket_frames(self, browser_in: int, browser_out: int) -> None:
        if browser_in:
            self._frames_in.inc(browser_in)
        if browser_out:
            self._frames_out.inc(browser_out)


# -- the directory ---------------------------------------------------------------------------


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """This host's metrics directory, set as ``PROMETHEUS_MULTIPROC_DIR`` for this process and
    the workers it starts.

    The operator's ``PROMETHEUS_MULTIPROC_DIR`` if set (created if missing, its old ``*.db``
    files removed first, as prometheus_client asks), else a private directory removed on exit.
    """
    configured = os.environ.get(DIRECTORY_ENV, "").strip()
    if configured:
        os.makedirs(configured, exist_ok=True)
        for old in glob.glob(os.path.join(configured, "*.db")):
            os.remove(old)
        os.environ[DIRECTORY_ENV] = configured
        yield configured
        return
    directory = tempfile.mkdtemp(prefix="liveproxy-metrics-", dir=os.environ.get("XDG_RUNTIME_DIR"))
    os.environ[DIRECTORY_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(DIRECTORY_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def process_metrics(metrics_bind: str | None, *, worker: bool) -> Iterator[Metrics]:
    """What this ``liveproxy serve`` process counts into: nothing without ``METRICS_BIND``; a
    worker, into its supervisor's directory; a server on its own, into one of its own."""
    if metrics_bind is None:
        yield NO_METRICS
        return
    if worker:
        directory = os.environ.get(DIRECTORY_ENV)
        if not directory:
            raise RuntimeError(f"a worker with METRICS_BIND needs {DIRECTORY_ENV} set")
        yield PrometheusMetrics(directory)
        return
    with metrics_directory() as directory:
        yield PrometheusMetrics(directory)


def process_gone(directory: str, pid: int) -> None:
    """Forget the live gauges of process ``pid``, which has exited (its totals stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


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


# -- the listener ----------------------------------------------------------------------------


def scraper(directory: str) -> Callable[[], bytes]:
    """The text format of every process's values in ``directory``, added up."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry: CollectorRegistry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]

    def scrape() -> bytes:
        return generate_latest(registry)

    return scrape


class MetricsApp:
    """ASGI app: ``GET`` or ``HEAD /metrics`` answers ``scrape()``; other paths are 404, other
    methods 405, WebSockets refused (403).

    Not prometheus_client's ``make_asgi_app``: it calls ``generate_latest``, which reads every
    process's files, on the event loop. Here each scrape runs in a worker thread, at most
    :data:`MAX_SCRAPES` at once (on a limiter of its own: a flood of scrapes takes no thread the
    app's state store needs). A scrape that raises is answered 500 and logged by type only.
    """

    def __init__(self, scrape: Callable[[], bytes]) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        self._scrape = scrape
        self._content_type = CONTENT_TYPE_LATEST.encode()
        self._threads = trio.CapacityLimiter(MAX_SCRAPES)

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close"})
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if scope["path"] != "/metrics":
            status, body = 404, b"not found\n"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
            headers.append((b"allow", b"GET, HEAD"))
        else:
            try:
                body = await trio.to_thread.run_sync(self._scrape, limiter=self._threads)
                status, headers = 200, [(b"content-type", self._content_type)]
            except Exception as exc:  # an unreadable file must not show its content or path
                log.error("a metrics scrape failed: %s", type(exc).__name__)
                status, body = 500, b"scrape failed\n"
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer Hypercorn's lifespan messages: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _MetricsConfig(hypercorn.config.Config):
    """Hypercorn's config; its listening socket, and so every connection, drops a client that
    leaves what it is sent unacknowledged for :data:`SEND_TIMEOUT_SECONDS` (``TCP_USER_TIMEOUT``:
    Hypercorn's writes have no deadline, and one that stopped reading would hold its
    connection forever)."""

    def create_sockets(self) -> hypercorn.config.Sockets:
        sockets = super().create_sockets()
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in sockets.insecure_sockets:
                milliseconds = int(SEND_TIMEOUT_SECONDS * 1000)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
        return sockets


def metrics_hypercorn_config(bind: str) -> hypercorn.config.Config:
    """Hypercorn settings for ``METRICS_BIND``: HTTP/1.1 on ``bind``, no access log, and no
    connection held long: a request head must arrive within :data:`KEEP_ALIVE_SECONDS` of the
    connection (or of the previous answer) and within :data:`MAX_HEAD_BYTES`, a connection
    that sends nothing for :data:`READ_TIMEOUT_SECONDS` is closed, and one that stops reading
    is dropped (see :class:`_MetricsConfig`)."""
    config = _MetricsConfig()
    config.bind = [bind]
    config.worker_class = "trio"
    config.backlog = BACKLOG
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.read_timeout = READ_TIMEOUT_SECONDS
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    config.graceful_timeout = 1.0
    config.include_server_header = False
    config.accesslog = None
    # Hypercorn's own "Running on ..." would read like the proxy's address: warnings only.
    config.errorlog = logging.getLogger("liveproxy.metrics.hypercorn")
    config.errorlog.setLevel(logging.WARNING)
    return config


async def serve_metrics(
    bind: str,
    directory: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` (:class:`MetricsApp`) on ``bind`` (``host:port``, port 0 picks
    one) with Hypercorn's trio worker, HTTP/1.1 only, until cancelled; logs and reports the URL.

    Raises:
        ExceptionGroup: holding the ``OSError`` when ``bind`` cannot be listened on.
    """
    hypercorn_fixes.install()  # HTTP/1.1 only, and one connection's failure closes only it
    # Typed with this project's loose ASGI aliases, not Hypercorn's TypedDicts.
    app = cast(ASGIFramework, MetricsApp(scraper(directory)))
    config = metrics_hypercorn_config(bind)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config, mode="asgi"))
        url = f"{binds[0]}/metrics"
        log.info("metrics on %s", url)
        task_status.started(url)
