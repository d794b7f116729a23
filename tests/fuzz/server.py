"""A real ``liveproxy serve`` process (built-in emulator), its bystander, and the health checks.

The process runs with no Google credentials (so it serves the built-in Gemini Live emulator), on
127.0.0.1 and a port it picks, in an empty temporary directory (so no ``.env`` is read).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import psutil

from tests.fuzz.wire import Bystander, http_json
from tests.models import TEST_MODEL

#: Smaller than the 2 MiB default so crossing the proxy's limit is cheap.
MAX_MESSAGE_BYTES = 65536
#: Frames a connection may send a second (BROWSER_MESSAGE_RATE, its default).
MESSAGE_RATE = 400

#: How far the proxy may stay above its baseline once an example's connections are closed.
#: RSS: CPython rarely hands freed memory back to the OS, and an example may make the process
#: hold a few of the examples' frames (up to ~8 MiB once inflated) in wsproto's and Hypercorn's
#: buffers and grow pymalloc arenas; 50 MiB is well above that noise yet is crossed by any real
#: per-connection leak within a few hundred examples (a session holds ~110 KiB, a large frame
#: 1-8 MiB).
RSS_SLACK = 50 * 1024 * 1024
#: fds: the bystander's session is already in the baseline; what may remain is a few sockets
#: whose close the server has not processed yet (each session is 3 fds: browser socket, and
#: both ends of its upstream connection to the in-process emulator). 20 leaves room for that,
#: and a leak of one fd per example crosses it within 20 examples.
FD_SLACK = 20
#: Time for the server to notice closed connections and end their sessions.
SETTLE_SECONDS = 10.0
#: The longest the server's event loop may stall (``event_loop_stalled``: its watchdog logs
#: every stall of 0.5 s or more). A loaded 2-core machine, a large garbage collection, stay
#: well under it; one hostile frame that freezes every session for seconds does not. Stalls
#: under it are counted and the longest is reported.
STALL_BOUND = 2.0
#: How far above its RSS at an example's start the process may go while the example runs.
#: One connection can make it hold, by the limits (MAX_MESSAGE_BYTES 64 KiB here): the message
#: being assembled (64 KiB, counted as memory) and whole ones queued for the app (64 KiB
#: together, fix 9 of ``hypercorn_fixes``; Hypercorn alone queues 10: 640 KiB); the message
#: parsed (a 64 KiB JSON of empty objects is ~1.5 MiB of Python objects), once by the proxy and
#: once by the in-process emulator; the turns kept to replay (2 MiB), BROWSER_QUEUE_BYTES
#: (480 KB) and UPSTREAM_BUFFER_BYTES (256 KiB): about 7 MiB, and an example has one such
#: connection at a time (the resume lane a few in a row). 32 MiB is 4 times that, room for the
#: allocators (pymalloc arenas, glibc's per-thread arenas) and the sampler's 20 ms of lag; a
#: frame held whole past the limit (1 MiB frames, 8 MiB deflate bombs) or per-frame state kept
#: for a flood of thousands crosses it.
PEAK_BUDGET = 32 * 1024 * 1024
PEAK_INTERVAL = 0.02

#: ``2026-01-01 12:00:00,000 LEVEL logger...``: the start of every line the server logs (text
#: format); a traceback's lines after it are indented with ``    | ``.
LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S"
)
TRACEBACK_LINE = "    | "
#: The watchdog's line (liveproxy/serving/loop_watch.py), anchored so that no client text can pose
#: as one.
STALL_LINE = re.compile(
    r"\S+ \S+ WARNING liveproxy\.loop(?: \[worker \d+\])?: "
    r"the event loop did not run for (\d+\.\d+) s$"
)

_SECRET_NAMES = (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "UPSTREAM_URL",
    "EMULATOR",
)

SERVER_ENV = {
    "HOST": "127.0.0.1",
    "MODEL": TEST_MODEL,
    "PORT": "0",
    "LOG_LEVEL": "INFO",
    "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    "BROWSER_MESSAGE_RATE": str(MESSAGE_RATE),
    # The bystander lives as long as the run; its session must not hit the time limit.
    "SESSION_TIME_LIMIT": "86400",
    "SESSION_MAX_SECONDS": "86400",
    # Unused tokens count against MAX_SESSIONS for TOKEN_TTL_SECONDS: keep capacity out of it.
    "MAX_SESSIONS": "100000",
    # Every example comes from 127.0.0.1: per-client limits are tested elsewhere.
    "AUTH_RATE_LIMIT": "0",
    "MAX_SESSIONS_PER_CLIENT": "0",
    "SHUTDOWN_GRACE_SECONDS": "1",
}


class ServerDied(AssertionError):
    pass


class PeakRss:
    """The highest RSS of ``proc`` while in the ``with`` block, sampled every PEAK_INTERVAL s."""

    def __init__(self, proc: psutil.Process) -> None:
        self._proc = proc
        self.value = proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(PEAK_INTERVAL):
            try:
                self.value = max(self.value, self._proc.memory_info().rss)
            except psutil.Error:  # it died: the example's own checks say so
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


class ProxyProcess:
    """One ``liveproxy serve`` subprocess with a live bystander session and a resource baseline.

    ``settings`` are added to :data:`SERVER_ENV` (``{dir}`` in a value: the process's own
    temporary directory, its working directory); ``sign_in``: the headers the bystander signs
    in with. ``admin_port``: the ``ADMIN_BIND`` listener's, when it has one.
    """

    command: tuple[str, ...] = (sys.executable, "-m", "liveproxy", "serve")

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        sign_in: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._cwd = tempfile.TemporaryDirectory(prefix="liveproxy-fuzz-")
        self.directory = self._cwd.name
        env = {k: v for k, v in os.environ.items() if k not in _SECRET_NAMES}
        env.update(SERVER_ENV)
        env.update({k: v.format(dir=self.directory) for k, v in (settings or {}).items()})
        self.process = subprocess.Popen(
            self.command,
            cwd=self._cwd.name,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self.line_count = 0
        #: stderr lines that report an exception or an error, and how many a check has seen.
        self.errors: list[str] = []
        self.errors_seen = 0
        #: Lines that are not log lines (a newline from a client's text, a print), likewise.
        self.strays: list[str] = []
        self.strays_seen = 0
        #: Every stall the watchdog logged (seconds, line), and how many a check has seen.
        self.stalls: list[tuple[float, str]] = []
        self.stalls_seen = 0
        self._ports: queue.Queue[int | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.bystander: Bystander | None = None
        self.port: int = 0
        self.admin_port: int | None = None
        self.proc: psutil.Process
        self.base_rss: int = 0
        self.base_fds: int = 0
        try:
            try:
                port = self._ports.get(timeout=30)
            except queue.Empty:
                port = None
            if port is None:
                raise ServerDied("the server did not start listening:\n" + self.tail())
            self.port = port
            assert any("built-in Gemini Live emulator" in line for line in self.lines), self.tail()
            self.proc = psutil.Process(self.process.pid)
            # Warm the paths the examples take (first imports, caches) before the baseline.
            for path in ("/api/health", "/api/status", "/nowhere"):
                http_json(self.port, "GET", path)
            self.bystander = Bystander(self.port, sign_in)
            self.bystander.turn()
            self.base_rss, self.base_fds = self.resources()
        except BaseException:
            self.kill()
            raise

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self.line_count += 1
            log_line = LOG_LINE.match(line)
            if log_line is None and not line.startswith(TRACEBACK_LINE):
                self.strays.append(line)
            if line.startswith("Traceback") or (
                log_line is not None and log_line.group(1) in ("ERROR", "CRITICAL")
            ):
                self.errors.append(line)
            stall = STALL_LINE.match(line)
            if stall is not None:
                self.stalls.append((float(stall.group(1)), line))
            admin = re.search(r"operator's view on http://127\.0\.0\.1:(\d+)", line)
            if admin:
                self.admin_port = int(admin.group(1))
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self._ports.put(int(match.group(1)))
        self._ports.put(None)

    def tail(self, n: int = 40) -> str:
        return "\n".join(list(self.lines)[-n:])

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def resources(self) -> tuple[int, int]:
        return self.proc.memory_info().rss, self.proc.num_fds()

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self, what: str, grace: float = 0.0) -> None:
        """Fail with the end of its stderr if the process died, or dies within ``grace`` s.

        (A server on its way out may drop its connections some time before it exits.)
        """
        if grace:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        if not self.alive():
            self._reader.join(2)  # the last lines of its stderr
            raise ServerDied(
                f"the server process died ({what}), exit status {self.process.returncode}; "
                f"last lines of its stderr:\n{self.tail()}"
            )

    def check(self) -> None:
        """After an example: alive, the bystander answered, new connections are served, nothing
        was logged at ERROR, RSS and fds are back near the baseline, and the log has no stall
        over STALL_BOUND and no line that is not a log line."""
        self.assert_alive("during the example")
        assert self.bystander is not None
        try:
            self.bystander.turn()
        except Exception as exc:
            self.assert_alive("while the bystander waited for its answer", grace=3)
            raise AssertionError(
                f"the bystander session got no answer ({type(exc).__name__}: {exc}); "
                f"last lines of the server's stderr:\n{self.tail()}"
            ) from exc
        try:
            status, answer = http_json(self.port, "GET", "/api/health")
            assert status == 200, (status, answer)
        except Exception as exc:
            self.assert_alive("while a new client asked GET /api/health", grace=3)
            raise AssertionError(
                f"the server no longer serves new connections ({type(exc).__name__}: {exc}); "
                f"last lines of its stderr:\n{self.tail()}"
            ) from exc
        self.check_log()
        self._settle()
        self.check_log()  # what was logged while its connections closed

    def check_log(self) -> None:
        """Of the lines read since the last call: no error, no stall over STALL_BOUND, no line
        that is not a log line."""
        if len(self.errors) > self.errors_seen:
            new, self.errors_seen = self.errors[self.errors_seen :], len(self.errors)
            raise AssertionError(
                "the server logged an error (an exception no client should cause): "
                + " | ".join(new[:5])
                + f"\nlast lines of its stderr:\n{self.tail()}"
            )
        stalls, self.stalls_seen = self.stalls[self.stalls_seen :], len(self.stalls)
        over = [line for seconds, line in stalls if seconds > STALL_BOUND]
        if over:
            raise AssertionError(
                f"the server's event loop stalled for more than {STALL_BOUND} s (every session "
                "froze): " + " | ".join(over[:5]) + f"\nlast lines of its stderr:\n{self.tail()}"
            )
        if len(self.strays) > self.strays_seen:
            new, self.strays_seen = self.strays[self.strays_seen :], len(self.strays)
            raise AssertionError(
                "the server wrote lines that are not log lines (a client's text began a line?): "
                + " | ".join(repr(line[:200]) for line in new[:5])
            )

    def _settle(self) -> None:
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            self.assert_alive("while its connections closed")
            rss, fds = self.resources()
            if rss <= self.base_rss + RSS_SLACK and fds <= self.base_fds + FD_SLACK:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the proxy did not come back near its baseline within {SETTLE_SECONDS}s: "
                    f"RSS {rss / 2**20:.1f} MiB (baseline {self.base_rss / 2**20:.1f}, "
                    f"bound +{RSS_SLACK / 2**20:.0f}), fds {fds} (baseline {self.base_fds}, "
                    f"bound +{FD_SLACK}); connections: {self._connection_summary()}; "
                    f"last lines of the server's stderr:\n{self.tail()}"
                )
            time.sleep(0.05)

    def _connection_summary(self) -> str:
        try:
            states = collections.Counter(c.status for c in self.proc.net_connections("tcp"))
        except psutil.Error as exc:
            return f"({exc})"
        return ", ".join(f"{state}: {n}" for state, n in sorted(states.items()))

    def stop(self) -> int:
        """SIGTERM, as a deployment would; the exit status (the process is gone afterwards)."""
        if self.bystander is not None:
            self.bystander.close()
            self.bystander = None
        self.process.terminate()
        try:
            return self.process.wait(20)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.bystander is not None:
            self.bystander.ws.sock.close()
            self.bystander = None
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._cwd.cleanup()
