"""The child processes of a bench run: start them, watch their CPU and RSS, stop them.

Each child runs in its own session (Ctrl-C reaches only ``run.py``, which then stops them in
order) and, on Linux, gets SIGTERM from the kernel if ``run.py`` dies without cleaning up.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

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
        "SHUTDOWN_GRACE_SECONDS",
    }
)


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
    """One running child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (0 once the process is gone)."""
        try:
            times = self.ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def rss(self) -> int:
        try:
            return int(self.ps.memory_info().rss)
        except psutil.Error:
            return 0

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the process."""
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    stdout_pipe: bool = False,
) -> Child:
    """Start ``argv`` as a child in its own session; stderr (and stdout unless piped) to a log."""
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            bufsize=0,
            stderr=sink,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Child(name, popen, log)


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


def start_emulator(log_dir: Path) -> tuple[Child, int]:
    """The Gemini Live emulator in fast echo mode on a free port: ``(child, port)``.

    Raises:
        ChildFailed: it did not report its address within 20 seconds.
    """
    argv = [sys.executable, "-m", "liveproxy", "emulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--mode", "echo", "--speed", "fast"]
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


def proxy_env(port: int, upstream_port: int) -> dict[str, str]:
    """The environment for ``liveproxy serve`` in the bench (see bench/README.md)."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env.update(
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


def start_proxy(log_dir: Path, upstream_port: int, attempts: int = 3) -> tuple[Child, int]:
    """``liveproxy serve`` (Hypercorn's trio worker) on a free port: ``(child, port)``.

    It runs in ``log_dir`` so no ``.env`` file of the checkout changes its settings.

    Raises:
        ChildFailed: it did not answer ``GET /api/health`` within 30 seconds.
    """
    failure = ""
    for _ in range(attempts):
        port = free_port()
        argv = [sys.executable, "-m", "liveproxy", "serve"]
        child = spawn("proxy", argv, log_dir, env=proxy_env(port, upstream_port), cwd=log_dir)
        if _wait_healthy(child, port, 30.0):
            return child, port
        failure = child.log_tail()
        child.stop()
    raise ChildFailed(f"liveproxy did not start:\n{failure}")


def _wait_healthy(child: Child, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/health"
    while time.monotonic() < deadline and child.alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds of each watched process and of the whole machine at one instant."""

    wall: float
    cpu: dict[str, float]
    machine_busy: float
    machine_steal: float
    proxy_rss: int


class Watcher:
    """Takes :class:`Snapshot` s of the bench's processes (``run.py`` itself included)."""

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
