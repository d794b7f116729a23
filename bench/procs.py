"""The child processes of a bench run: start them, watch their CPU and RSS, stop them.

Each child runs in its own session (Ctrl-C reaches only ``run.py``, which then stops them in
order) and, on Linux, gets SIGTERM from the kernel if ``run.py`` dies without cleaning up.

With ``WORKERS`` > 1 the proxy is a supervisor and its worker processes (which it restarts when
one dies): the proxy's CPU time and RSS are those of the whole process tree, looked up at each
reading, and :func:`sessions_per_worker` counts each worker's connections from the generator.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from bench.wire import LIVE_MODEL

REPO = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
#: Variables liveproxy reads that a developer's shell might set; the bench sets its own.
_PROXY_VARS = frozenset(
    {
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
        "LOCATION",
        "MODEL",
        "ALLOWED_MODELS",
        "API_VERSION",
        "UPSTREAM_URL",
        "EMULATOR",
        "HOST",
        "PORT",
        "LOG_LEVEL",
        "SESSION_TIME_LIMIT",
        "SESSION_MIN_SECONDS",
        "SESSION_MAX_SECONDS",
        "TOKEN_TTL_SECONDS",
        "MAX_SESSIONS",
        "AUTH_RATE_LIMIT",
        "MAX_SESSIONS_PER_CLIENT",
        "SETUP_TIMEOUT_SECONDS",
        "MAX_MESSAGE_BYTES",
        "BROWSER_QUEUE_BYTES",
        "UPSTREAM_BUFFER_BYTES",
        "CONTEXT_WINDOW_COMPRESSION",
        "RECONNECT_ATTEMPTS",
        "UPSTREAM_PING_INTERVAL_SECONDS",
        "UPSTREAM_PONG_TIMEOUT_SECONDS",
        "BROWSER_IDLE_SECONDS",
        "BROWSER_KEEPALIVE_SECONDS",
        "BROWSER_TIMEOUT_SECONDS",
        "BROWSER_MESSAGE_RATE",
        "REQUEST_BODY_TIMEOUT_SECONDS",
        "SHUTDOWN_GRACE_SECONDS",
        "ALLOWED_ORIGINS",
        "AUTH_PATHS",
        "WS_PATHS",
        "TRUSTED_PROXIES",
        "WS_COMPRESSION",
        "WORKERS",
        "STATE_URL",
        "SESSION_LEASE_SECONDS",
        "LOG_FORMAT",
        "AUTH_JWKS_URL",
        "AUTH_JWT_AUDIENCE",
        "AUTH_JWT_ISSUER",
        "AUTH_JWT_SECRET",
    }
)
#: What a supervisor tells its workers; a shell that has them would make ``serve`` a worker.
_WORKER_PREFIX = "LIVEPROXY_WORKER_"


#: Machine CPU time that counts as busy (guest time is inside user; steal is not ours).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


class ChildFailed(RuntimeError):
    """A child process did not start, or died; the message ends with its log's tail."""


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Child:
    """One running child process and where its output goes.

    With ``tree`` its CPU time and RSS include all its descendants (the proxy's workers).
    """

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    tree: bool = False
    #: Every descendant seen so far (to stop any the child leaves behind).
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def descendants(self) -> list[psutil.Process]:
        """Its live descendants, looked up now (workers can have been restarted)."""
        try:
            found: list[psutil.Process] = self.ps.children(recursive=True)
        except psutil.Error:
            return []
        for process in found:
            self.seen.setdefault(process.pid, process)
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (0 once the process is gone). With ``tree``: plus
        that of its live descendants and of the children it has reaped (a restarted worker's
        time moves from the first to the second when its parent reaps it)."""
        total = 0.0
        if self.tree:
            for process in self.descendants():
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                total += times.user + times.system
        try:
            times = self.ps.cpu_times()
        except psutil.Error:
            return total
        total += times.user + times.system
        if self.tree:
            total += times.children_user + times.children_system
        return float(total)

    def rss(self) -> int:
        """Resident memory; with ``tree``, summed over the process and its descendants (pages
        they share are counted in each)."""
        processes = [self.ps, *self.descendants()] if self.tree else [self.ps]
        total = 0
        for process in processes:
            try:
                total += int(process.memory_info().rss)
            except psutil.Error:
                continue
        return total

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the process. A
        descendant still running after that (a worker its supervisor could not stop) is
        killed too, by its pid (psutil checks it is still the same process)."""
        self.descendants()
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for process in self.seen.values():
            try:
                if process.is_running():
                    process.kill()
            except psutil.Error:
                pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()

    def tell(self, line: str) -> None:
        """Write ``line`` to the child's piped stdin (ignored once the child is gone)."""
        stream = self.popen.stdin
        if stream is not None:
            try:
                stream.write(line.encode() + b"\n")
                stream.flush()
            except OSError:
                pass


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    stdout_pipe: bool = False,
    stdin_pipe: bool = False,
    tree: bool = False,
) -> Child:
    """Start ``argv`` as a child in its own session; stderr (and stdout unless piped) to a log."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            bufsize=0,
            stderr=sink,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Child(name, popen, log, tree=tree)


def read_line(child: Child, timeout: float) -> str | None:
    """The next line of ``child``'s piped stdout, or None at EOF.

    The pipe is unbuffered (``bufsize=0``), so ``select`` sees every line not yet read.

    Raises:
        TimeoutError: no line within ``timeout`` seconds.
    """
    stream: IO[bytes] | None = child.popen.stdout
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], max(timeout, 0.0))
    if not ready:
        raise TimeoutError(f"{child.name}: no output for {timeout:.0f}s")
    line = stream.readline()
    return line.decode(errors="replace").rstrip("\n") if line else None


def start_emulator(log_dir: Path, extra: Sequence[str] = ()) -> tuple[Child, int]:
    """The Gemini Live emulator in fast echo mode on a free port, serving the direct mode's
    model (:data:`~bench.wire.LIVE_MODEL`) too: ``(child, port)``. ``extra`` arguments come
    last, so they win (``--mode conversation``, faults such as ``--stall-after 0``).

    Raises:
        ChildFailed: it did not report its address within 20 seconds.
    """
    argv = [sys.executable, "-m", "liveproxy", "emulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--mode", "echo", "--speed", "fast", "--model", LIVE_MODEL, *extra]
    child = spawn("emulator", argv, log_dir, stdout_pipe=True)
    try:
        line = read_line(child, 20.0)
    except TimeoutError:
        line = None
    match = re.search(r"ws://127\.0\.0\.1:(\d+)", line or "")
    if match is None:
        child.stop()
        raise ChildFailed(f"the emulator did not start: {line!r}\n{child.log_tail()}")
    return child, int(match.group(1))


def proxy_env(
    port: int, upstream_port: int, workers: int = 1, ws_compression: bool = False
) -> dict[str, str]:
    """The environment for ``liveproxy serve`` in the bench (see bench/README.md)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _PROXY_VARS and not k.startswith(_WORKER_PREFIX)
    }
    env.update(
        WORKERS=str(workers),
        WS_COMPRESSION="true" if ws_compression else "false",
        PORT=str(port),
        HOST="127.0.0.1",
        UPSTREAM_URL=f"ws://127.0.0.1:{upstream_port}",
        GOOGLE_API_KEY="bench",
        MAX_SESSIONS="2000",
        # Every simulated browser comes from 127.0.0.1: per-client limits would cap the sweep.
        AUTH_RATE_LIMIT="0",
        MAX_SESSIONS_PER_CLIENT="0",
        LOG_LEVEL="WARNING",
        SESSION_TIME_LIMIT="600",
        SESSION_MAX_SECONDS="600",
        SHUTDOWN_GRACE_SECONDS="1",
    )
    return env


def start_proxy(
    log_dir: Path,
    upstream_port: int,
    *,
    workers: int = 1,
    ws_compression: bool = False,
    attempts: int = 3,
    settings: Mapping[str, str | None] | None = None,
) -> tuple[Child, int]:
    """``liveproxy serve`` (Hypercorn's trio worker; a supervisor and ``workers`` worker
    processes when ``workers`` > 1) on a free port: ``(child, port)``.

    It runs in ``log_dir`` so no ``.env`` file of the checkout changes its settings; its log
    is ``proxy-w<workers>.log`` there. ``settings`` change :func:`proxy_env`'s environment (a
    None value removes the variable: liveproxy's default applies).

    Raises:
        ChildFailed: it (every worker) did not answer ``GET /api/health`` within 30 seconds.
    """
    failure = ""
    for _ in range(attempts):
        port = free_port()
        argv = [sys.executable, "-m", "liveproxy", "serve"]
        env = proxy_env(port, upstream_port, workers, ws_compression)
        for name, value in (settings or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        child = spawn(f"proxy-w{workers}", argv, log_dir, env=env, cwd=log_dir, tree=True)
        if _wait_healthy(child, port, workers, 30.0):
            return child, port
        failure = child.log_tail()
        child.stop()
    raise ChildFailed(f"liveproxy (WORKERS={workers}) did not start:\n{failure}")


#: Health checks per worker once all have started: each is a fresh connection, which
#: SO_REUSEPORT hashes to one worker's socket, so 8 per worker reach every worker (one that
#: got none is a chance of 2 ** -15 with two workers).
_PROBES_PER_WORKER = 8


def _wait_healthy(child: Child, port: int, workers: int, timeout: float) -> bool:
    """Wait until the proxy answers ``GET /api/health`` and, with workers, until it has
    ``workers`` worker processes and health checks on fresh connections all get answered (a
    connection hashed to a worker still starting waits in its socket's queue, so an answer
    means that worker listens). The bench keeps ``LOG_LEVEL=WARNING``, so the supervisor's
    ``Running on ... with N workers`` line cannot be waited for."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=max(0.1, deadline - time.monotonic())) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    while time.monotonic() < deadline and child.alive():
        if healthy() and (workers == 1 or len(worker_processes(child)) == workers):
            break
        time.sleep(0.1)
    else:
        return False
    if workers == 1:
        return True
    return all(healthy() for _ in range(_PROBES_PER_WORKER * workers))


def worker_processes(proxy: Child) -> list[tuple[int, psutil.Process]]:
    """``(worker id, process)`` of each live worker of the proxy, by id (``LIVEPROXY_WORKER_ID``
    in its environment); the proxy itself as worker 1 when it has no workers (``WORKERS=1``)."""
    workers: list[tuple[int, psutil.Process]] = []
    for process in proxy.descendants():
        try:
            worker_id = process.environ().get(f"{_WORKER_PREFIX}ID")
        except psutil.Error:
            continue
        if worker_id is not None and worker_id.isdigit():
            workers.append((int(worker_id), process))
    if not workers:
        return [(1, proxy.ps)]
    return sorted(workers, key=lambda pair: pair[0])


def _established(process: psutil.Process) -> list[Any]:
    try:
        return [
            c
            for c in process.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr
        ]
    except psutil.Error:
        return []


def sessions_per_worker(proxy: Child, port: int, peer: Child) -> list[dict[str, int]]:
    """For each worker (by id): its pid and its ESTABLISHED TCP connections on the proxy's
    ``port`` whose remote end is one of ``peer``'s (the load generator's) sockets."""
    peer_ends = {(c.laddr.ip, c.laddr.port) for c in _established(peer.ps) if c.raddr.port == port}
    counts = []
    for worker_id, process in worker_processes(proxy):
        sessions = sum(
            1
            for c in _established(process)
            if c.laddr.port == port and (c.raddr.ip, c.raddr.port) in peer_ends
        )
        counts.append({"worker": worker_id, "pid": process.pid, "sessions": sessions})
    return counts


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds of each watched process and of the whole machine at one instant."""

    wall: float
    cpu: dict[str, float]
    machine_busy: float
    machine_steal: float
    proxy_rss: int


class Watcher:
    """Takes :class:`Snapshot` s of the bench's processes (``run.py`` itself included); the
    proxy's CPU and RSS are its whole process tree's (see :class:`Child`)."""

    def __init__(self, proxy: Child, emulator: Child) -> None:
        self.proxy = proxy
        self.emulator = emulator
        self.me = psutil.Process()
        self.extra: dict[str, Callable[[], float]] = {}

    def snapshot(self) -> Snapshot:
        machine = psutil.cpu_times()
        busy = sum(float(getattr(machine, f, 0.0)) for f in _BUSY_FIELDS)
        mine = self.me.cpu_times()
        cpu = {
            "proxy": self.proxy.cpu_seconds(),
            "emulator": self.emulator.cpu_seconds(),
            "bench": float(mine.user + mine.system),
        }
        cpu.update({name: read() for name, read in self.extra.items()})
        steal = float(getattr(machine, "steal", 0.0))
        return Snapshot(time.monotonic(), cpu, busy, steal, self.proxy.rss())


def cpu_percent(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """CPU % per process between two snapshots (one core = 100 %), plus ``machine`` (all
    cores), ``other`` (the machine minus the bench's processes: someone else's load) and
    ``steal`` (time the hypervisor gave our virtual CPUs to someone else)."""
    wall = max(end.wall - start.wall, 1e-9)
    result = {
        name: round(100 * (end.cpu.get(name, 0.0) - start.cpu[name]) / wall, 1)
        for name in start.cpu
    }
    machine = 100 * (end.machine_busy - start.machine_busy) / wall
    result["machine"] = round(machine, 1)
    result["other"] = round(max(0.0, machine - sum(result[n] for n in start.cpu)), 1)
    result["steal"] = round(100 * (end.machine_steal - start.machine_steal) / wall, 1)
    return result
