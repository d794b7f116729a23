"""``WORKERS`` > 1: one supervisor, N worker processes of ``liveproxy serve``, one port.

The supervisor binds one listening socket per worker, all on the same port with
``SO_REUSEPORT``, so the kernel spreads new connections across workers by their address hash
(one shared accept queue would let whichever worker wakes first take most long-lived
WebSockets). It keeps every socket open itself: when a worker dies, connections hashed to its
socket wait in that socket's queue for the restarted worker instead of being reset. Once
draining, no worker is restarted: the supervisor answers an exited worker's socket itself, 503,
until it exits (see :mod:`liveproxy.serving.refuser`), so no connection waits for the drain to end.

It also owns what the workers share: the built-in emulator in emulator mode (one, not one per
worker), and the default state store, a private SQLite file in a runtime directory removed at
exit. A worker that exits while the server runs is logged and restarted, after a back-off that
doubles (up to :data:`MAX_BACKOFF_SECONDS`) while restarts keep failing. With ``ADMIN_BIND``
it serves the operator's view (:mod:`liveproxy.serving.admin_listener`) on a store connection
of its own. With ``METRICS_BIND`` it serves the workers' metrics, added up (see
:mod:`liveproxy.web.metrics`): the workers count into a directory it gives them, and a worker
that exits is marked dead there. SIGTERM or SIGINT is
passed to every worker; each drains as the endings table says, and the supervisor returns 0
once all have exited (1 if one had to be killed after the drain's deadline).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from contextlib import ExitStack

import attrs
import trio

from liveproxy.config import Config
from liveproxy.serving.admin_listener import serve_admin
from liveproxy.serving.metrics_listener import metrics_directory, process_gone, serve_metrics
from liveproxy.serving.refuser import refuse
from liveproxy.serving.server import CannotListen, listening_on, shown_address
from liveproxy.serving.worker import WorkerSpec
from liveproxy.store.opening import open_store
from liveproxy.upstream.startup import EMULATOR_NOTICE, SharedEmulator, run_emulator

log = logging.getLogger("liveproxy.supervisor")

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
#: A worker that ran this long before dying is restarted at once (its back-off starts over).
STABLE_SECONDS = 60.0
#: Beyond the drain (grace plus closing), how long workers get before they are killed.
KILL_MARGIN_SECONDS = 15.0
#: How long a starting worker may take to listen.
START_TIMEOUT_SECONDS = 60.0


def listening_sockets(config: Config) -> list[socket.socket]:
    """``config.workers`` sockets listening on one address with ``SO_REUSEPORT`` (port 0: the
    first one's port, shared by all). Inheritable, so a worker can be handed its own.

    Raises:
        CannotListen: the address cannot be resolved, bound or listened on.
    """
    sockets: list[socket.socket] = []
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM
        )[0]
        for _ in range(config.workers):
            sock = socket.socket(family, kind)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(address)
            address = sock.getsockname()
            sock.listen(1024)
            sock.set_inheritable(True)
    except BaseException as exc:
        for sock in sockets:
            sock.close()
        if isinstance(exc, OSError):
            raise CannotListen(shown_address(config.host, config.port), exc) from exc
        raise
    return sockets


@attrs.define(eq=False)
class _Worker:
    id: int
    sock: socket.socket
    process: trio.Process | None = None
    #: Where the worker counts its metrics (None: no ``METRICS_BIND``).
    metrics_dir: str | None = None


async def supervise(config: Config) -> int:
    """Run the workers until SIGTERM/SIGINT, then drain them all; returns the exit status."""
    with ExitStack() as cleanup:
        state_url = config.state_url
        if state_url is None:
            runtime = tempfile.mkdtemp(prefix="liveproxy-", dir=os.environ.get("XDG_RUNTIME_DIR"))
            cleanup.callback(shutil.rmtree, runtime, ignore_errors=True)
            state_url = f"sqlite://{runtime}/state.db"
        sockets = listening_sockets(config)
        for sock in sockets:
            cleanup.callback(sock.close)
        metrics_dir = None
        if config.metrics_bind is not None:  # set for the workers before they start
            metrics_dir = cleanup.enter_context(metrics_directory())
        return await _supervise(config, state_url, sockets, metrics_dir)


async def _supervise(
    config: Config, state_url: str, sockets: list[socket.socket], metrics_dir: str | None
) -> int:
    workers = [_Worker(n, sock, metrics_dir=metrics_dir) for n, sock in enumerate(sockets, start=1)]
    stopping = trio.Event()
    killed = False
    async with trio.open_nursery() as nursery:
        emulator = None
        if config.mode == "emulator":
            emulator = await _start_emulator(nursery)
        if config.metrics_bind is not None and metrics_dir is not None:
            with listening_on(config.metrics_bind, "METRICS_BIND"):
                await nursery.start(serve_metrics, config.metrics_bind, metrics_dir)
        if config.admin_bind is not None:
            await nursery.start(_serve_admin, config, state_url)
        nursery.start_soon(_pass_on_signals, workers, stopping)
        async with trio.open_nursery() as running:
            ready = []
            for worker in workers:
                spec = WorkerSpec(worker.id, worker.sock.fileno(), -1, state_url, emulator)
                ready.append(trio.Event())
                running.start_soon(_keep_running, worker, spec, stopping, ready[-1], nursery)
            with trio.move_on_after(START_TIMEOUT_SECONDS):
                for event in ready:
                    await event.wait()
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            log.info("Running on http://%s:%d with %d workers", shown, port, len(workers))
            await stopping.wait()
            with trio.move_on_after(
                config.shutdown_grace_seconds + 2 * 5.0 + KILL_MARGIN_SECONDS
            ) as deadline:
                await _all_exited(workers)
            if deadline.cancelled_caught:
                killed = True
                for worker in workers:
                    if worker.process is not None and worker.process.returncode is None:
                        log.error("worker %d did not drain in time: killed", worker.id)
                        worker.process.kill()
        nursery.cancel_scope.cancel()
    log.info("all workers have exited")
    return 1 if killed else 0


async def _serve_admin(
    config: Config, state_url: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """The host's ``ADMIN_BIND`` listener, on a connection of its own to the workers' store."""
    assert config.admin_bind is not None
    lease_seconds = config.session_lease_seconds
    async with open_store(state_url, lease_seconds) as store, trio.open_nursery() as nursery:
        with listening_on(config.admin_bind, "ADMIN_BIND"):
            url = await nursery.start(serve_admin, config, store)
        task_status.started(url)


async def _start_emulator(nursery: trio.Nursery) -> SharedEmulator:
    import secrets

    key = secrets.token_urlsafe(16)
    url = await nursery.start(run_emulator, key, trio.CancelScope())
    log.info(EMULATOR_NOTICE + " (shared by the workers)", url)
    return SharedEmulator(url, key)


async def _keep_running(
    worker: _Worker,
    spec: WorkerSpec,
    stopping: trio.Event,
    ready: trio.Event,
    refusing: trio.Nursery,
) -> None:
    """Start the worker, and again each time it exits before ``stopping``. Returns once
    stopping and the worker has exited, leaving its socket answered 503 in ``refusing`` (until
    that nursery is cancelled, when the supervisor exits)."""
    backoff = FIRST_BACKOFF_SECONDS
    while not stopping.is_set():
        started_at = trio.current_time()
        status = await _run_once(worker, spec, ready, stopping)
        if stopping.is_set():
            break
        if trio.current_time() - started_at >= STABLE_SECONDS:
            backoff = FIRST_BACKOFF_SECONDS
        log.error("worker %d exited (%s): restarting in %gs", worker.id, status, backoff)
        with trio.move_on_after(backoff):
            await stopping.wait()
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    log.info("worker %d has exited: its socket is answered 503 until the server exits", worker.id)
    refusing.start_soon(refuse, worker.sock)


async def _run_once(
    worker: _Worker, spec: WorkerSpec, ready: trio.Event, stopping: trio.Event
) -> str:
    """Run the worker process to its end; ``ready`` is set once it listens. Returns how it
    ended, in words."""
    read_end, write_end = os.pipe()
    try:
        spec = attrs.evolve(spec, ready_fd=write_end)
        env = dict(os.environ, **spec.to_env())
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "liveproxy", "serve"],
            env=env,
            pass_fds=(spec.fd, write_end),
        )
    finally:
        os.close(write_end)
    worker.process = process
    if stopping.is_set():  # the signal came while it was starting
        process.send_signal(signal.SIGTERM)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_ready, read_end, ready, worker.id)
        code = await process.wait()
        nursery.cancel_scope.cancel()
    if worker.metrics_dir is not None:  # its sessions are no longer live
        process_gone(worker.metrics_dir, process.pid)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


async def _wait_ready(fd: int, ready: trio.Event, worker_id: int) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        line = await stream.receive_some(64)
    if line:
        log.info("worker %d (pid %s) listening", worker_id, line.decode().strip())
        ready.set()


async def _pass_on_signals(workers: list[_Worker], stopping: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not stopping.is_set():
                log.info("%s: draining %d workers", signal.Signals(signum).name, len(workers))
            stopping.set()
            for worker in workers:
                process = worker.process
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)


async def _all_exited(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process is not None:
            await worker.process.wait()
