"""``python bench/limits.py``: the most memory a client can make liveproxy hold, measured.

Each case starts its own ``liveproxy serve`` in an empty temporary directory (no ``.env``
applies) on a free port, with liveproxy's defaults except where the case says, and a
``liveproxy emulator`` process as its upstream: the emulator ``liveproxy serve`` builds in, run
beside it so that its own memory is not counted and its faults (``--stall-after``,
``--setup-delay``) can force what the proxy must then hold. A thread samples the proxy's RSS
(psutil) every 10 ms. Each case records the RSS settled before the load (``before``), its peak,
the RSS once the load is in place and steady (``held``) and once the client has gone and the
process settled (``after``); per unit is (held - before) / units.

Prints a table and writes ``limits-<time>.json`` under ``--out-dir`` (not committed);
``--publish`` also writes ``limits.json`` there. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import trio

if __package__ in (None, ""):  # run as a script: python bench/limits.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.httpc import HttpError, request, session_token
from bench.procs import REPO, Child, free_port, start_emulator, start_proxy
from bench.wire import is_setup_complete
from bench.wsclient import WebSocket, connect
from liveproxy.config import Config
from liveproxy.contract.translate import browser_text_to_upstream
from liveproxy.core.link import REPLAY_BYTES, UpstreamLink
from liveproxy.core.resumable import MAX_STATE_BYTES
from liveproxy.web.app import MAX_BODY_BYTES

HOST = "127.0.0.1"
KIB, MIB = 1024, 1024 * 1024
#: liveproxy's defaults (no environment, no .env).
DEFAULT = Config.from_env({}, env_file=None)
MAX_MESSAGE_BYTES = DEFAULT.max_message_bytes
BROWSER_QUEUE_BYTES = DEFAULT.browser_queue_bytes
UPSTREAM_BUFFER_BYTES = DEFAULT.upstream_buffer_bytes
SETUP_TIMEOUT = DEFAULT.setup_timeout_seconds
BODY_TIMEOUT = DEFAULT.request_body_timeout_seconds
PER_CLIENT = DEFAULT.max_sessions_per_client
assert DEFAULT.auth_rate_limit is not None
SIGN_INS, SIGN_IN_PERIOD = DEFAULT.auth_rate_limit

SAMPLE_SECONDS = 0.01
#: The RSS is steady once it moved less than this over this long.
STEADY_BYTES, STEADY_SECONDS = 512 * KIB, 1.0
LIVE = "sessions_live"
SLOW_CLIENTS = 'sessions_total{reason="slow_client"}'
SETUP = '{"setup": {"generation_config": {"response_modalities": ["AUDIO"]}}}'
#: The bench's values (bench.procs.proxy_env) that a case at liveproxy's defaults removes.
DEFAULTS: dict[str, str | None] = dict.fromkeys(
    ("MAX_SESSIONS", "AUTH_RATE_LIMIT", "MAX_SESSIONS_PER_CLIENT", "SESSION_TIME_LIMIT",
     "SESSION_MAX_SECONDS"),
)  # fmt: skip
#: For cases that need many sockets from one address.
MANY = {"MAX_SESSIONS": "2000", "AUTH_RATE_LIMIT": "0", "MAX_SESSIONS_PER_CLIENT": "0"}


def client_turn(text: str) -> str:
    """A ``client_content`` turn that is not final (the model waits: no answer, no handle)."""
    turn = {"turns": [{"role": "user", "parts": [{"text": text}]}], "turn_complete": False}
    return json.dumps({"client_content": turn}, ensure_ascii=False, separators=(",", ":"))


def widest_turn() -> str:
    """The largest text message accepted: one emoji makes every character count 4 bytes."""
    frame = client_turn("\U0001f600")
    return client_turn("a" * (MAX_MESSAGE_BYTES // 4 - len(frame)) + "\U0001f600")


def turn_within(footprint: int) -> str:
    """The largest turn with one emoji whose upstream form takes at most ``footprint`` bytes."""
    frame = client_turn("\U0001f600")
    chars = (footprint - sys.getsizeof(browser_text_to_upstream(frame))) // 4
    return client_turn("a" * chars + "\U0001f600")


class Sampler:
    """The proxy's RSS every 10 ms, on a thread: the latest, the peak since :meth:`mark`, and
    whether it has stopped moving."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.now = self.peak = int(self._process.memory_info().rss)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                rss = int(self._process.memory_info().rss)
            except psutil.Error:
                return
            now = time.monotonic()
            with self._lock:
                self.now, self.peak = rss, max(self.peak, rss)
                self._recent.append((now, rss))
                while self._recent[0][0] < now - STEADY_SECONDS:
                    self._recent.popleft()

    def mark(self) -> int:
        """Start a new peak at the current RSS, and return it."""
        with self._lock:
            self.peak = self.now
            return self.now

    def steady(self) -> bool:
        with self._lock:
            values = [rss for _, rss in self._recent]
            span = self._recent[-1][0] - self._recent[0][0] if self._recent else 0.0
        return span >= STEADY_SECONDS * 0.9 and max(values) - min(values) <= STEADY_BYTES

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Proxy:
    """A running ``liveproxy serve``: its port, its metrics port, its RSS."""

    port: int
    metrics_port: int
    child: Child
    rss: Sampler


@contextmanager
def running(
    directory: Path, settings: Mapping[str, str | None], emulator: Sequence[str] = ()
) -> Iterator[Proxy]:
    """An emulator (conversation mode, fast, plus ``emulator`` flags) and a proxy in front of it
    at liveproxy's defaults changed by ``settings``, in ``directory``; both stopped on exit."""
    directory.mkdir(parents=True)
    emu, upstream = start_emulator(directory, ("--mode", "conversation", *emulator))
    try:
        metrics_port = free_port()
        env = {**DEFAULTS, "METRICS_BIND": f"{HOST}:{metrics_port}", **settings}
        child, port = start_proxy(directory, upstream, settings=env)
        sampler = Sampler(child.pid)
        try:
            yield Proxy(port, metrics_port, child, sampler)
        finally:
            sampler.close()
            child.stop()
    finally:
        emu.stop()


@dataclass
class Result:
    """One case: RSS in bytes; ``extra`` has what else was counted (store rows, answers)."""

    case: str
    bound: str
    unit: str
    units: int
    before: int = 0
    peak: int = 0
    held: int = 0
    after: int = 0
    endings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def per_unit(self) -> float:
        return (self.held - self.before) / self.units

    @property
    def peak_per_unit(self) -> float:
        return (self.peak - self.before) / self.units


Load = Callable[[Proxy, Result], Awaitable[None]]


@dataclass
class Case:
    name: str
    bound: str
    unit: str
    units: int
    load: Load
    settings: Mapping[str, str | None] = field(default_factory=dict)
    emulator: Sequence[str] = ()


async def settled(rss: Sampler, at_most: float = 20.0) -> int:
    """The RSS once it is steady (or after ``at_most`` seconds)."""
    with trio.move_on_after(at_most):
        await trio.sleep(STEADY_SECONDS)
        while True:  # polling another process: nothing to wait on
            if rss.steady():
                break
            await trio.sleep(0.05)
    return rss.now


async def metrics(proxy: Proxy) -> dict[str, float]:
    """The session endings, refused sockets and sign-in answers the proxy counted."""
    _, body = await request(HOST, proxy.metrics_port, "GET", "/metrics")
    kept = ("liveproxy_sessions_", "liveproxy_sockets_refused_total{", "liveproxy_tokens")
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(kept) and not name.startswith("liveproxy_tokens_created"):
            found[name.removeprefix("liveproxy_")] = float(value)
    return found


async def measure(proxy: Proxy, case: Case) -> Result:
    result = Result(case.name, case.bound, case.unit, case.units)
    result.before = await settled(proxy.rss)
    proxy.rss.mark()
    await case.load(proxy, result)
    result.peak = max(result.peak, proxy.rss.peak)
    result.after = await settled(proxy.rss)
    result.endings = await metrics(proxy)
    return result


# The client's side -------------------------------------------------------------------------


async def open_socket(proxy: Proxy, token: str | None = None) -> WebSocket:
    path = "/ws" if token is None else f"/ws?token={token}"
    return await connect(HOST, proxy.port, path, offer_deflate=False)


async def new_token(proxy: Proxy) -> str:
    return await session_token(HOST, proxy.port, 180)


async def start_session(proxy: Proxy, token: str | None = None, *, ready: bool = True) -> WebSocket:
    """A socket that sent its setup; with ``ready``, ``setupComplete`` has arrived."""
    ws = await open_socket(proxy, token or await new_token(proxy))
    await ws.send(SETUP)
    while ready and not is_setup_complete(await ws.receive()):
        pass
    return ws


async def leave(ws: WebSocket) -> None:
    """Close (at most 2 s for the close handshake; the socket is released either way)."""
    with trio.move_on_after(2):
        await ws.aclose()


async def leave_all(sockets: Sequence[WebSocket]) -> None:
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(leave, ws)


def server_connections(proxy: Proxy) -> int:
    """Established TCP connections on the proxy's port, as the proxy holds them."""
    found = proxy.child.ps.net_connections(kind="tcp")
    return sum(1 for c in found if c.laddr.port == proxy.port and c.status == "ESTABLISHED")


# The cases ---------------------------------------------------------------------------------


async def idle(proxy: Proxy, result: Result, *, token: bool, setup: bool) -> None:
    """``units`` sockets, upgraded and then silent: without a token (the proxy closes them
    4003 and the client never answers), with one and no setup yet, or past setupComplete."""
    sockets: list[WebSocket] = []
    for _ in range(result.units):
        if setup:
            sockets.append(await start_session(proxy))
        else:
            sockets.append(await open_socket(proxy, await new_token(proxy) if token else None))
    result.held = await settled(proxy.rss)
    result.extra["server_connections"] = server_connections(proxy)
    await leave_all(sockets)


async def flood(
    proxy: Proxy,
    result: Result,
    *,
    message: bytes | str,
    count: int,
    ready: bool = True,
    sessions: int = 0,
) -> None:
    """``sessions`` (default ``units``) sessions each send ``count`` copies of ``message`` as
    fast as the proxy takes them, and read nothing."""
    sockets = [await start_session(proxy, ready=ready) for _ in range(sessions or result.units)]
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            for _ in range(count):
                if ws.send_nowait(message):
                    nursery.start_soon(ws.flush)
        result.held = await settled(proxy.rss, at_most=SETUP_TIMEOUT - 3 if not ready else 20)
        result.extra["server_connections"] = server_connections(proxy)
        await leave_all(sockets)
    await trio.sleep(1)
    result.extra["live_1s_after_leaving"] = (await metrics(proxy)).get(LIVE, 0)


async def unread(proxy: Proxy, result: Result, *, frame: bytes, rate: float) -> None:
    """``units`` sessions send audio ``rate`` times a second to the echo and never read the
    answers, until the proxy ends them ``slow_client``."""
    sessions = [await start_session(proxy) for _ in range(result.units)]

    async def send(ws: WebSocket) -> None:
        while True:
            if ws.send_nowait(frame):
                nursery.start_soon(ws.flush)
            await trio.sleep(1 / rate)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for ws in sessions:
            nursery.start_soon(send, ws)
        with trio.move_on_after(60):
            while True:  # polling the proxy's metrics
                if (await metrics(proxy)).get(SLOW_CLIENTS, 0) >= result.units:
                    break
                await trio.sleep(0.25)
        result.extra["seconds_to_slow_client"] = round(trio.current_time() - started, 1)
        result.held = await settled(proxy.rss, at_most=5)
        result.extra["server_connections"] = server_connections(proxy)
        nursery.cancel_scope.cancel()
    await leave_all(sessions)


def _head(extra: str) -> bytes:
    lines = ["POST /api/auth HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json", extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(proxy: Proxy, data: bytes, answers: list[tuple[int, float]]) -> None:
    """Send ``data`` and note the status of the answer and how long it took (0: none)."""
    started = trio.current_time()
    status = 0
    try:
        stream = await trio.open_tcp_stream(HOST, proxy.port)
        async with stream:
            await stream.send_all(data)
            head = b""
            while b"\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    except (OSError, trio.BrokenResourceError):
        pass
    answers.append((status, trio.current_time() - started))


async def bodies(proxy: Proxy, result: Result) -> None:
    """``units`` request bodies that stop after 10 bytes, at once (held is measured while they
    wait for their 408); then ``units`` each of a body declared over the limit and one counted
    over it (chunked), at once (their peak is in ``extra``)."""
    chunk = b"400\r\n" + b"x" * KIB + b"\r\n"
    kinds = {
        "stalled": _head("Content-Length: 100") + b'{"session_',
        "declared": _head(f"Content-Length: {MIB}") + b"x" * KIB,
        "counted": _head("Transfer-Encoding: chunked") + chunk * (MAX_BODY_BYTES // KIB + 1),
    }
    answers: dict[str, list[tuple[int, float]]] = {kind: [] for kind in kinds}
    for phase in (["stalled"], ["declared", "counted"]):
        before = proxy.rss.mark()
        async with trio.open_nursery() as nursery:
            for kind in phase:
                for _ in range(result.units):
                    nursery.start_soon(_answer, proxy, kinds[kind], answers[kind])
            if phase == ["stalled"]:
                await trio.sleep(BODY_TIMEOUT / 2)
                result.held = proxy.rss.now
                result.extra["server_connections"] = server_connections(proxy)
        peak = (proxy.rss.peak - before) / (len(phase) * result.units)
        result.extra[f"{'_'.join(phase)}_peak_per_request_bytes"] = round(peak)
    result.peak = max(result.peak, proxy.rss.peak)
    for kind, found in answers.items():
        statuses = sorted({status for status, _ in found})
        result.extra[f"{kind}_status"] = ",".join(map(str, statuses))
        result.extra[f"{kind}_seconds_max"] = round(max(seconds for _, seconds in found), 2)


# The store case: one client, as many kept conversations and tokens as the limits let it ------


def store_rows(db: Path) -> dict[str, float | int | str]:
    """What the SQLite file holds now: unexpired rows and the conversations' state bytes."""
    now = time.time()
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        conversations, state = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(state AS BLOB))), 0)"
            " FROM conversations WHERE expires_at > ?",
            (now,),
        ).fetchone()
        (tokens,) = c.execute("SELECT COUNT(*) FROM tokens WHERE expires_at > ?", (now,)).fetchone()
        (buckets,) = c.execute("SELECT COUNT(*) FROM buckets").fetchone()
    wal = db.with_name(db.name + "-wal")
    return {
        "rows_conversations": conversations,
        "state_bytes": state,
        "rows_tokens": tokens,
        "rows_buckets": buckets,
        "file_bytes": db.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
    }


async def one_client(proxy: Proxy, result: Result, *, window: float, db: Path | None) -> None:
    """One client at the default limits: tokens until refused; those spent on sessions that
    each send a turn (their kept state near 512 KiB) and stay; once the sign-in bucket is full
    again, they end, and the client churns such sessions as fast as the bucket allows until
    just before the first conversations expire. ``held`` is the RSS then."""
    turn = client_turn("a" * (MAX_STATE_BYTES - 8 * KIB))
    tokens: list[str] = []
    while len(tokens) <= PER_CLIENT:
        try:
            tokens.append(await new_token(proxy))
        except HttpError as exc:
            result.extra["token_refused"] = str(exc)[:90]
            break
    result.extra["tokens_held"] = len(tokens)
    if db is not None:
        rows = await trio.to_thread.run_sync(store_rows, db)
        result.extra |= {f"with_tokens_{key}": value for key, value in rows.items()}
    live = [await start_session(proxy, token) for token in tokens]
    for ws in live:
        await ws.send(turn)
    # The bucket refills what the tokens and the refused sign-in (it counts too) took.
    await trio.sleep((len(tokens) + 1) * SIGN_IN_PERIOD / SIGN_INS + 1)
    start = trio.current_time()
    await leave_all(live)
    kept, refused = len(live), 0
    while trio.current_time() < start + window - 2:
        try:
            token = await new_token(proxy)
        except HttpError:
            refused += 1
            await trio.sleep(0.1)
            continue
        ws = await start_session(proxy, token)
        await ws.send(turn)
        await leave(ws)
        kept += 1
    await trio.sleep(0.5)
    result.held = proxy.rss.now
    result.extra |= {"conversations_made": kept, "sign_ins_refused": refused}
    if db is not None:
        result.extra |= await trio.to_thread.run_sync(store_rows, db)


def store_cases(work: Path, window: float) -> list[Result]:
    """The same client against a SQLite store and the default memory store, side by side."""
    bound = (
        f"({SIGN_INS} + {SIGN_INS}/{SIGN_IN_PERIOD:g}s x {window:g}s + {PER_CLIENT} live) "
        f"conversations x {MAX_STATE_BYTES // KIB} KiB; {PER_CLIENT} tokens"
    )
    db = work / "store-sqlite" / "state.db"
    window_setting = {"RESUME_WINDOW_SECONDS": f"{window:g}"}
    cases = [
        Case("store-sqlite", bound, "client", 1,
             functools.partial(one_client, window=window, db=db),
             {**window_setting, "STATE_URL": f"sqlite://{db}"}),
        Case("store-memory", bound, "client", 1,
             functools.partial(one_client, window=window, db=None), window_setting),
    ]  # fmt: skip
    with (
        running(work / cases[0].name, cases[0].settings) as sqlite_proxy,
        running(work / cases[1].name, cases[1].settings) as memory_proxy,
    ):

        async def both() -> list[Result]:
            results: list[Result] = []

            async def one(proxy: Proxy, case: Case) -> None:
                results.append(await measure(proxy, case))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, sqlite_proxy, cases[0])
                nursery.start_soon(one, memory_proxy, cases[1])
            return sorted(results, key=lambda r: r.case, reverse=True)

        return trio.run(both)


def cases(n: int, heavy: int) -> list[Case]:
    """Every case but the store's, each for its own proxy process."""
    binary = b"\x01\x00" * (MAX_MESSAGE_BYTES // 2)
    widest = widest_turn()
    in_flight = "Hypercorn's queue (MAX_MESSAGE_BYTES) + 2 messages, + 1 written upstream"
    buffer = f"UPSTREAM_BUFFER_BYTES ({UPSTREAM_BUFFER_BYTES // KIB} KiB) + 1 message, as above"
    replay = f"{UpstreamLink.REPLAY_LIMIT} turns and REPLAY_BYTES ({REPLAY_BYTES // MIB} MiB)"
    stall = ("--stall-after", "0")
    setup_delay = ("--setup-delay", f"{SETUP_TIMEOUT - 1:g}")
    return [
        Case("socket-no-token", "closed 4003 at once", "socket", n,
             functools.partial(idle, token=False, setup=False), MANY),
        Case("socket-before-setup", "SETUP_TIMEOUT_SECONDS", "socket", n,
             functools.partial(idle, token=True, setup=False),
             {**MANY, "SETUP_TIMEOUT_SECONDS": "60"}),
        Case("session-idle", "MAX_SESSIONS", "session", n,
             functools.partial(idle, token=True, setup=True), MANY),
        Case("in-flight-binary", in_flight, "session", heavy,
             functools.partial(flood, message=binary, count=32), MANY, stall),
        Case("in-flight-text-emoji", in_flight, "session", heavy,
             functools.partial(flood, message=widest, count=32), MANY, stall),
        Case("client-in-flight-binary", f"MAX_SESSIONS_PER_CLIENT ({PER_CLIENT}) sessions",
             "client", 1, functools.partial(flood, message=binary, count=24, sessions=PER_CLIENT),
             {}, stall),
        Case("in-flight-binary-reading", in_flight, "session", heavy,
             functools.partial(flood, message=binary, count=32), MANY),
        Case("link-buffer-binary", buffer, "session", heavy,
             functools.partial(flood, message=binary, count=32, ready=False), MANY, setup_delay),
        Case("replay-32-widest-turns", replay, "session", heavy,
             functools.partial(flood, message=widest, count=UpstreamLink.REPLAY_LIMIT), MANY),
        Case("replay-32-turns-filling-it", replay, "session", heavy,
             functools.partial(flood, message=turn_within(REPLAY_BYTES // 32), count=32), MANY),
        Case("browser-queue-unread", f"BROWSER_QUEUE_BYTES ({BROWSER_QUEUE_BYTES})", "session",
             heavy, functools.partial(unread, frame=b"\x01\x00" * 16000, rate=100), MANY,
             ("--mode", "echo")),
        Case("request-bodies", f"{MAX_BODY_BYTES} B; {BODY_TIMEOUT:g} s", "stalled request", n,
             bodies, MANY),
    ]  # fmt: skip


# Report ------------------------------------------------------------------------------------


def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def table(results: Sequence[Result]) -> str:
    rows = [
        "| case | bound | units | before MiB | peak MiB | held MiB | after MiB "
        "| held per unit KiB | peak per unit KiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.case} | {r.bound} | {r.units} {r.unit} | {_mib(r.before)} | {_mib(r.peak)} "
            f"| {_mib(r.held)} | {_mib(r.after)} | {r.per_unit / KIB:.0f} "
            f"| {r.peak_per_unit / KIB:.0f} |"
        )
    details = [f"- {r.case}: {r.extra} endings {r.endings}" for r in results]
    return "\n".join([*rows, "", *details])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sockets", type=int, default=200, help="idle sockets/sessions (200)")
    parser.add_argument("--heavy", type=int, default=3, help="sessions per worst case (3)")
    parser.add_argument(
        "--store-window", type=float, default=DEFAULT.resume_window_seconds,
        help="RESUME_WINDOW_SECONDS for the store cases (60, the default)",
    )  # fmt: skip
    parser.add_argument("--only", help="comma list of case names (prefixes) to run")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--publish", action="store_true", help="also write limits.json")
    args = parser.parse_args(argv)
    wanted = tuple(args.only.split(",")) if args.only else ("",)
    started = datetime.now(UTC)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="limits-") as tmp:
        work = Path(tmp)
        for case in cases(args.sockets, args.heavy):
            if case.name.startswith(wanted):
                print(f"... {case.name}", file=sys.stderr, flush=True)
                with running(work / case.name, case.settings, case.emulator) as proxy:
                    results.append(trio.run(measure, proxy, case))
        if any("store".startswith(w) or w.startswith("store") for w in wanted):
            print("... store (about 45 s + the window)", file=sys.stderr, flush=True)
            results += store_cases(work, args.store_window)
    print(table(results))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    document = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds()),
        "git_commit": commit,
        "machine": f"{platform.platform()}, {psutil.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "options": {k: str(v) for k, v in vars(args).items()},
        "results": [
            {**asdict(r), "per_unit": r.per_unit, "peak_per_unit": r.peak_per_unit} for r in results
        ],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"limits-{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwrote {path}", file=sys.stderr)
    if args.publish:
        (args.out_dir / "limits.json").write_text(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
