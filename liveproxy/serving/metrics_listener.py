"""The ``METRICS_BIND`` listener and the metrics directory: Prometheus' view of one host.

Each process that counts (:mod:`liveproxy.web.metrics`) writes its values to files in one
directory, ``PROMETHEUS_MULTIPROC_DIR``; whoever serves ``METRICS_BIND`` (the supervisor with
``WORKERS`` > 1, else the server itself) adds them up at each scrape. The directory is the
operator's ``PROMETHEUS_MULTIPROC_DIR`` (emptied of old files at start), or a private one
removed at exit. A worker that exits is marked dead: its share of ``liveproxy_sessions_live``
(``livesum``) goes, its totals stay.

The listener is Hypercorn (trio worker, HTTP/1.1 only) serving :class:`MetricsApp`, with
bounds on the time a request may take and a connection may stay silent or unread, so slow
clients cannot starve the scrapes.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Final, cast

import hypercorn.config
import hypercorn.trio
import trio
from hypercorn.typing import ASGIFramework

from liveproxy.serving import hypercorn_fixes
from liveproxy.web.asgi import ASGIMessage, Receive, Send, answered_unless_http
from liveproxy.web.metrics import DIRECTORY_ENV, NO_METRICS, Metrics, PrometheusMetrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("liveproxy.metrics")

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
        if await answered_unless_http(scope, receive, send):
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
