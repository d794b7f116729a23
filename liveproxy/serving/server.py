"""``liveproxy serve``: the app on Hypercorn's trio worker, with signal-driven graceful shutdown.

On SIGTERM or SIGINT the server stops issuing tokens (``POST /api/auth`` answers 503) and
starting sessions, gives live sessions up to ``SHUTDOWN_GRACE_SECONDS`` to end, then ends the
rest (``sessionEnd`` reason ``shutdown``, close 1001), closes every upstream connection, stops
listening and returns.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Final, TypeVar

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from liveproxy import logs
from liveproxy.config import Config, ConfigError
from liveproxy.core.prices import PricesError, read_prices
from liveproxy.serving import hypercorn_fixes
from liveproxy.serving.admin_listener import serve_admin
from liveproxy.serving.loop_watch import LoopWatch
from liveproxy.serving.metrics_listener import process_metrics, serve_metrics
from liveproxy.serving.worker import WorkerSpec
from liveproxy.store.opening import open_store
from liveproxy.tools import ToolLoadError, load_tools
from liveproxy.web.app import LiveProxyApp, create_app

log = logging.getLogger("liveproxy")

#: After the grace period: time for sessions to send their last message and close, and then
#: Hypercorn's deadline for connections still open.
CLOSE_MARGIN_SECONDS = 5.0
#: How often a worker checks that its supervisor is still there.
ORPHAN_CHECK_SECONDS = 1.0
#: Collect the youngest generation every 10 000 allocations instead of 700 (see tune_gc).
GC_THRESHOLDS = (10_000, 10, 10)


_E = TypeVar("_E", bound=BaseException)


class CannotListen(Exception):
    """An address this process was to listen on, refused by the OS (in use, not this host's,
    not allowed): ``liveproxy serve`` says so in one line and exits 1."""

    def __init__(self, address: str, reason: OSError, setting: str = "") -> None:
        super().__init__(address, reason, setting)
        self.address = address
        self.reason = reason
        #: The setting that named the address, when it is not HOST and PORT.
        self.setting = setting

    def __str__(self) -> str:
        setting = f" ({self.setting})" if self.setting else ""
        return f"cannot listen on {self.address}{setting}: {self.reason}"


def shown_address(host: str, port: int | str) -> str:
    """``host:port`` as an operator writes it (``[::1]:8000`` for IPv6)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def listening_on(address: str, setting: str) -> Iterator[None]:
    """Starting a listener on ``address`` (from ``setting``): an ``OSError`` it raises, alone
    or in exception groups, becomes :class:`CannotListen`."""
    try:
        yield
    except* OSError as group:
        raise CannotListen(address, _first(group), setting) from None


def _first(group: BaseExceptionGroup[_E]) -> _E:
    found = group.exceptions[0]
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the audio path.

    The hot path allocates a few dozen containers per frame, so with Python's defaults a full
    collection ran every few seconds under load and walked every object of the app and its
    libraries: measured at 100 sessions, pauses of up to 108 ms that set the p99 round trip.
    Freezing what exists once serving has started takes those objects out of every later
    collection, and a larger first threshold makes collections rarer (the cyclic garbage they
    let wait is bounded by the threshold).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _HypercornConfig(hypercorn.config.Config):
    """Hypercorn's config; its listening sockets carry our TCP liveness settings.

    Accepted sockets inherit them. Keepalive probes go out on a browser connection idle for
    ``keepalive_seconds``, and the kernel drops a connection on which nothing we send (data or
    probes) is acknowledged for ``timeout_seconds``: that ends the session of a vanished
    browser, and frees a writer stuck in Hypercorn's shielded send to a browser that stopped
    reading. (Hypercorn's own WebSocket pings are not used: its ping task keeps every closed
    connection, and its socket, alive for up to one ping interval.)
    """

    keepalive_seconds: float = 0.0
    timeout_seconds: float = 0.0
    #: Read by :class:`~liveproxy.serving.hypercorn_fixes.GuardedWSStream`.
    ws_compression: bool = False
    ws_frame_rate: int = 0

    def create_sockets(self) -> hypercorn.config.Sockets:
        try:
            sockets = super().create_sockets()
        except OSError as exc:
            raise CannotListen(", ".join(map(_shown_bind, self.bind)), exc) from exc
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                _set_liveness(sock, self.keepalive_seconds, self.timeout_seconds)
        return sockets


def _shown_bind(bind: str) -> str:
    """A Hypercorn bind as :func:`shown_address` shows it (``fd://N`` as it is)."""
    if "://" in bind:
        return bind
    host, _, port = bind.rpartition(":")
    return shown_address(host, port)


def _set_liveness(sock: socket.socket, keepalive: float, timeout: float) -> None:
    if keepalive and hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(keepalive / 4)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    if timeout and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))


def hypercorn_config(config: Config, fd: int | None = None) -> hypercorn.config.Config:
    """Hypercorn settings for ``config`` (trio worker, bind address or the listening socket
    ``fd`` a supervisor passed, limits, grace)."""
    hconfig = _HypercornConfig()
    hconfig.keepalive_seconds = config.browser_keepalive_seconds
    hconfig.timeout_seconds = config.browser_timeout_seconds
    hconfig.ws_compression = config.ws_compression
    hconfig.ws_frame_rate = config.browser_message_rate
    hconfig.bind = [f"fd://{fd}" if fd is not None else f"{config.host}:{config.port}"]
    hconfig.worker_class = "trio"
    hconfig.backlog = 1024
    # By the time Hypercorn stops, sessions are over (see drain): what is left is cut quickly.
    hconfig.graceful_timeout = 1.0
    # No message over MAX_MESSAGE_BYTES is ever held: the buffer refuses it as it grows and the
    # session answers message_too_big (see hypercorn_fixes).
    hconfig.websocket_max_message_size = config.max_message_bytes
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    return hconfig


async def serve(
    config: Config,
    *,
    stop: trio.Event | None = None,
    app: LiveProxyApp | None = None,
    gc_tuning: bool = False,
    worker: WorkerSpec | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set (default: SIGTERM/SIGINT), then shut down gracefully.

    Reports the bound URLs through ``task_status`` (port 0 works). ``gc_tuning`` applies
    :func:`tune_gc` once serving has started and watches the event loop for stalls
    (:mod:`~liveproxy.serving.loop_watch`): what ``liveproxy serve`` does. Without ``app``
    the state store of ``STATE_URL`` is opened, and closed on return, and with ``METRICS_BIND``
    the app counts its metrics. As a supervisor's ``worker`` it serves the inherited socket,
    says when it listens, and drains if the supervisor goes away; otherwise it serves
    ``METRICS_BIND`` itself.
    """
    if app is not None:
        await _serve(config, app, stop, gc_tuning, worker, task_status)
        return
    async with open_store(config.state_url, config.session_lease_seconds) as store:
        emulator = worker.emulator if worker else None
        with process_metrics(config.metrics_bind, worker=worker is not None) as metrics:
            app = create_app(config, store=store, emulator=emulator, metrics=metrics)
            await _serve(config, app, stop, gc_tuning, worker, task_status)


async def _serve(
    config: Config,
    app: LiveProxyApp,
    stop: trio.Event | None,
    gc_tuning: bool,
    worker: WorkerSpec | None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    hypercorn_fixes.install()
    state = app.proxy
    if worker is not None:
        state.leases.where["worker"] = worker.id
    watch_signals = stop is None
    stop = trio.Event() if stop is None else stop

    async def drain() -> None:
        """Hypercorn's shutdown trigger: returns once sessions are over, to stop listening."""
        await stop.wait()
        state.draining = True
        log.info(
            "shutting down: %d live sessions get up to %gs to end",
            state.gauges.live_sessions,
            config.shutdown_grace_seconds,
        )
        with trio.move_on_after(config.shutdown_grace_seconds):
            await state.gauges.wait_no_sessions()
        state.shutdown_now.set()
        # Not only the sessions: their sockets too, so that every browser has its last message
        # and close frame (and every upstream its close) before Hypercorn stops serving. A
        # session ends before its conversation is stored and its last frames are sent.
        with trio.move_on_after(CLOSE_MARGIN_SECONDS):
            await state.gauges.wait_idle()

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        fd = worker.fd if worker else None
        await hypercorn.trio.serve(
            app, hypercorn_config(config, fd), shutdown_trigger=drain, task_status=task_status
        )
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        if watch_signals:
            nursery.start_soon(_set_on_signal, stop)
        binds = await nursery.start(run_server)
        directory = app.metrics.directory
        if worker is None and config.metrics_bind is not None and directory is not None:
            with listening_on(config.metrics_bind, "METRICS_BIND"):
                await nursery.start(serve_metrics, config.metrics_bind, directory)
        if worker is None and config.admin_bind is not None:
            with listening_on(config.admin_bind, "ADMIN_BIND"):
                await nursery.start(serve_admin, config, state.store)
        if gc_tuning:
            tune_gc()
            nursery.start_soon(LoopWatch().run)
        if worker is not None:
            _say_ready(worker.ready_fd)
            nursery.start_soon(_stop_when_orphaned, stop)
        task_status.started(binds)


async def _set_on_signal(event: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            event.set()


def _say_ready(fd: int) -> None:
    """Tell the supervisor this worker listens (a line on its pipe, which is then closed)."""
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


async def _stop_when_orphaned(stop: trio.Event) -> None:
    """Drain once the supervisor that started this worker is gone (killed with no signal to
    pass on): a worker never serves on alone."""
    parent = os.getppid()
    while True:
        await trio.sleep(ORPHAN_CHECK_SECONDS)
        if os.getppid() != parent:
            break
    log.warning("the supervisor has gone: shutting down")
    stop.set()


#: The module of the example server tools ``make run`` serves.
EXAMPLE_TOOLS: Final = "liveproxy.tools.examples"
#: ``liveproxy serve --help`` starts with this.
DESCRIPTION = (
    "Serve the proxy: the demo page at /, the HTTP API (/api/auth, /api/health, /api/ready, "
    "/api/status) and the /ws WebSocket. Settings come from the environment and an optional "
    ".env file in the working directory (see README.md, 'Configuration'); with no Google "
    "credentials (GOOGLE_API_KEY or PROJECT_ID) it starts the built-in Gemini Live emulator. "
    "SIGTERM or SIGINT drains: no new sessions, live ones get SHUTDOWN_GRACE_SECONDS to end. "
    "An invalid setting exits 2."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``liveproxy serve``'s options on ``parser`` (the subcommand parser
    :mod:`liveproxy.cli` gives it)."""
    parser.add_argument("--host", help="interface to listen on (default: HOST or 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to listen on, 0 picks a free one (default: PORT or 8000)"
    )
    parser.add_argument(
        "--example-tools",
        action="store_true",
        help=f"also run the example server tools ({EXAMPLE_TOOLS}), as `make run` does",
    )


def build_parser() -> argparse.ArgumentParser:
    """``liveproxy serve``'s command line on its own."""
    parser = argparse.ArgumentParser(prog="liveproxy serve", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Serve as the parsed ``args`` and the environment say; returns the exit status."""
    try:
        config = Config.from_env()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        config = attrs.evolve(config, **overrides)
        read_prices(config.prices_file)  # checked once, before any worker starts
    except (ConfigError, PricesError) as exc:
        print(f"liveproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.example_tools and EXAMPLE_TOOLS not in config.tools_modules:
        config = attrs.evolve(config, tools_modules=(*config.tools_modules, EXAMPLE_TOOLS))
        os.environ["TOOLS_MODULES"] = ",".join(config.tools_modules)  # for the workers
    try:  # every tool is checked once, before any worker starts
        trio.run(_check_tools, config)
    except ToolLoadError as exc:
        print(f"liveproxy: tools error: {exc}", file=sys.stderr)
        return 2
    worker = WorkerSpec.from_env(os.environ)
    logs.configure(config.log_level, config.log_format, worker.id if worker else None)
    status = 0
    try:
        if worker is None and config.workers > 1:
            from liveproxy.serving.supervisor import supervise

            status = trio.run(supervise, config)
        else:
            if worker is not None:
                config = attrs.evolve(config, state_url=worker.state_url)
            trio.run(partial(serve, config, gc_tuning=True, worker=worker))
    except* CannotListen as group:
        # A port in use is an operator's mistake, not a bug: one line, no traceback.
        print(f"liveproxy: {_first(group)}", file=sys.stderr)
        status = 1
    return status


async def _check_tools(config: Config) -> None:
    """Load the configured tools and let them go.

    Raises:
        ToolLoadError: one cannot be loaded.
    """
    registry = load_tools(
        modules=config.tools_modules,
        tools_file=config.tools_file,
        selected=config.server_tools,
        threads=config.tool_threads,
    )
    await registry.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """``liveproxy serve [--host H] [--port P]``: returns the exit status."""
    parser = build_parser()
    return run(parser.parse_args(argv), parser)
