"""The load generator: N paced real-time audio sessions, via liveproxy or straight to the emulator.

``bench/run.py`` runs it as its own process (``python -m bench.loadgen ...``). One trio process:
with the default lean client (:mod:`bench.wsclient`) one pacer task writes every due frame of
every session and each session has one receiving task; with ``--client trio-websocket`` each
session has a paced sending task, a receiving task and trio-websocket's reader task. It prints
``MARK <name>`` lines on stdout at phase boundaries, so the parent can read the CPU times of all
three processes at the same instants, and writes its results as JSON to ``--json-out``.

Phases: ramp (sessions open at ``--ramp-rate`` per second; each open is timed), warm-up, the
measurement ``window``, then optionally ``churn_burst`` (sessions opened and closed as fast as
``--burst-workers`` closed loops can while the others stream) and ``churn_paced`` (at a fixed
rate, open-loop). Round trips are attributed to the phase in which their echo arrives.

Every WebSocket upgrade offers permessage-deflate as Chrome does (``--no-deflate-offer``: no
offer); the results count the upgrades whose answer accepted it. With ``--hold-after-window``
the sessions keep streaming after ``MARK window_end`` until a line arrives on stdin (at most
:data:`HOLD_LIMIT` seconds), so the parent can look at the live connections first.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import trio

from bench.httpc import HttpError, session_token
from bench.stats import summarise_ns
from bench.wire import (
    BROWSER_SETUP,
    LIVE_PATH,
    LIVE_SETUP,
    STAMP,
    Target,
    base_frame,
    is_setup_complete,
    live_audio_message,
    live_audio_of,
    read_stamp,
    stamp,
)
from bench.wsclient import (
    CHROME_DEFLATE_OFFER,
    Closed,
    Connection,
    HandshakeFailed,
    TrioWebSocket,
    WebSocket,
    connect,
)

Client = Literal["lean", "trio-websocket"]

now_ns = time.perf_counter_ns

#: How long a clean close may take before the connection is abandoned.
CLOSE_TIMEOUT = 3.0
#: The pacer's longest sleep, so sessions opened meanwhile start on time (seconds).
PACER_IDLE = 0.01
#: Churned opens allowed in flight at once before the paced churn skips a slot.
CHURN_IN_FLIGHT = 1000
#: ``--hold-after-window``: the longest wait for the parent's go-ahead (seconds).
HOLD_LIMIT = 30.0


class OpenError(Exception):
    """A session could not be opened (auth, upgrade or setup failed)."""


@dataclass
class Options:
    """What one load-generator run does (see :func:`build_parser`)."""

    target: Target
    host: str
    port: int
    sessions: int
    warmup: float
    duration: float
    frame_bytes: int = 3200
    interval_ms: float = 100.0
    ramp_rate: float = 100.0
    open_timeout: float = 10.0
    churn_rate: float = 0.0
    churn_seconds: float = 0.0
    burst_workers: int = 0
    session_duration: int = 600
    client: Client = "lean"
    deflate_offer: bool = True
    hold_after_window: bool = False


@dataclass
class Opens:
    """Open times (ns) of successful opens, whole and by part: ``auth`` (``POST /api/auth``,
    via the proxy only), ``upgrade`` (TCP connect + WebSocket upgrade) and ``setup`` (setup
    sent -> ``setupComplete`` received)."""

    total: list[int] = field(default_factory=list)
    auth: list[int] = field(default_factory=list)
    upgrade: list[int] = field(default_factory=list)
    setup: list[int] = field(default_factory=list)

    def add(self, auth: int | None, upgrade: int, setup: int) -> None:
        self.total.append((auth or 0) + upgrade + setup)
        if auth is not None:
            self.auth.append(auth)
        self.upgrade.append(upgrade)
        self.setup.append(setup)

    def __len__(self) -> int:
        return len(self.total)

    def parts(self) -> dict[str, Any]:
        return {
            "auth": summarise_ns(self.auth),
            "upgrade": summarise_ns(self.upgrade),
            "setup": summarise_ns(self.setup),
        }


@dataclass
class Phase:
    """Counters and raw samples of one phase (nanoseconds)."""

    name: str
    started_ns: int = 0
    ended_ns: int = 0
    sent: int = 0
    received: int = 0
    rtts: list[int] = field(default_factory=list)
    sched_rtts: list[int] = field(default_factory=list)
    lags: list[int] = field(default_factory=list)
    opens: Opens = field(default_factory=Opens)
    closes: list[int] = field(default_factory=list)
    open_failures: int = 0
    skipped: int = 0

    @property
    def seconds(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9

    def report(self) -> dict[str, Any]:
        seconds = self.seconds
        result: dict[str, Any] = {
            "seconds": round(seconds, 3),
            "sent": self.sent,
            "received": self.received,
            "sent_per_s": round(self.sent / seconds, 1) if seconds else None,
            "received_per_s": round(self.received / seconds, 1) if seconds else None,
            "rtt_ms": summarise_ns(self.rtts),
            "sched_rtt_ms": summarise_ns(self.sched_rtts),
            "send_lag_ms": summarise_ns(self.lags),
        }
        if self.opens or self.open_failures:
            result["opened"] = len(self.opens)
            result["open_failures"] = self.open_failures
            result["skipped"] = self.skipped
            result["open_ms"] = summarise_ns(self.opens.total)
            result["open_parts_ms"] = self.opens.parts()
            result["close_ms"] = summarise_ns(self.closes)
        return result


@dataclass
class Stream:
    """A streaming session of the lean client: its socket, its frame buffer, its next seq."""

    ws: WebSocket
    frame: bytearray
    seq: int = 0


class Generator:
    """Opens the sessions, paces their audio and times the echoes."""

    def __init__(self, options: Options, conns: trio.Nursery) -> None:
        self.opt = options
        self.conns = conns
        self.base = base_frame(options.frame_bytes)
        self.interval_ns = round(options.interval_ms * 1e6)
        self.epoch_ns = now_ns()
        self.current: Phase | None = None
        self.phases: list[Phase] = []
        self.live: dict[int, Connection] = {}
        self.ramp_opens = Opens()
        self.streams: dict[int, Stream] = {}
        #: (due time, session index) of every lean stream's next frame.
        self.due: list[tuple[int, int]] = []
        self.open_errors: Counter[str] = Counter()
        self.stream_errors: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.misrouted = 0
        self.bad_size = 0
        self.closing = False
        #: Successful upgrades by the server's ``Sec-WebSocket-Extensions`` answer ("" = none).
        self.extension_answers: Counter[str] = Counter()

    # -- phases ---------------------------------------------------------------------------

    def begin(self, name: str) -> Phase:
        phase = Phase(name, started_ns=now_ns())
        self.current = phase
        self.phases.append(phase)
        print(f"MARK {name}_start", flush=True)
        return phase

    def end(self, phase: Phase) -> None:
        phase.ended_ns = now_ns()
        self.current = None
        print(f"MARK {phase.name}_end", flush=True)

    # -- opening and closing ---------------------------------------------------------------

    async def open(self, times: Opens) -> Connection:
        """Open one session up to ``setupComplete`` and note its times in ``times``; the
        caller bounds the time.

        Raises:
            OpenError: auth, the upgrade or the setup failed.
        """
        opt = self.opt
        headers: list[tuple[str, str]] | None = None
        started = now_ns()
        try:
            if opt.target == "proxy":
                token = await session_token(opt.host, opt.port, opt.session_duration)
                path = f"/ws?token={token}"
                setup = BROWSER_SETUP
            else:
                path = LIVE_PATH
                headers = [("x-goog-api-key", "bench")]
                setup = LIVE_SETUP
            authorised = now_ns()
            ws: Connection
            offer = opt.deflate_offer
            if opt.client == "lean":
                ws = await connect(opt.host, opt.port, path, headers, offer_deflate=offer)
            else:
                ws = await TrioWebSocket.connect(
                    self.conns, opt.host, opt.port, path, headers, offer_deflate=offer
                )
        except (OSError, HttpError, HandshakeFailed) as exc:
            raise OpenError(f"{type(exc).__name__}: {exc}"[:200]) from None
        upgraded = now_ns()
        self.extension_answers[ws.extensions or ""] += 1
        try:
            await ws.send(setup)
            first = await ws.receive()
        except Closed as exc:
            await self.close(ws)
            raise OpenError(f"closed during setup: {exc}"[:200]) from None
        except BaseException:
            await self.close(ws)
            raise
        if not is_setup_complete(first):
            await self.close(ws)
            raise OpenError(f"expected setupComplete, got {first[:120]!r}")
        auth = authorised - started if opt.target == "proxy" else None
        times.add(auth, upgraded - authorised, now_ns() - upgraded)
        return ws

    async def timed_open(self, times: Opens) -> Connection | None:
        """Open a session within ``open_timeout`` (times noted in ``times``), or return None
        (the failure is counted)."""
        try:
            with trio.fail_after(self.opt.open_timeout):
                return await self.open(times)
        except OpenError as exc:
            self.open_errors[str(exc)] += 1
        except trio.TooSlowError:
            self.open_errors["open timed out"] += 1
        return None

    @staticmethod
    async def close(ws: Connection) -> None:
        """Close ``ws`` cleanly (close frame and reply), giving up after ``CLOSE_TIMEOUT``."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            await ws.aclose()

    # -- streaming --------------------------------------------------------------------------

    def first_due(self, index: int) -> int:
        """The first slot of session ``index`` from now: sessions are spread evenly over the
        interval by index, so N sessions send N frames per interval at even gaps."""
        interval = self.interval_ns
        origin = self.epoch_ns + index * interval // max(1, self.opt.sessions)
        return origin + math.ceil((now_ns() - origin) / interval) * interval

    def payload(self, frame: bytearray) -> bytes | str:
        return bytes(frame) if self.opt.target == "proxy" else live_audio_message(frame)

    def sent(self, due: int, sent: int) -> None:
        phase = self.current
        if phase is not None:
            phase.sent += 1
            phase.lags.append(sent - due)

    async def pace(self, flushers: trio.Nursery) -> None:
        """The lean client's single sender: wakes when the next frame is due and writes every
        frame that is due, without waiting for any socket (a slow one buffers, and its own
        flush task writes the rest, as a browser's WebSocket would)."""
        heap = self.due
        while True:
            if not heap:
                await trio.sleep(PACER_IDLE)
                continue
            delay = heap[0][0] - now_ns()
            if delay > 0:
                await trio.sleep(min(delay / 1e9, PACER_IDLE))
                continue
            now = now_ns()
            while heap and heap[0][0] <= now:
                due, index = heapq.heappop(heap)
                stream = self.streams[index]
                sent = now_ns()
                stamp(stream.frame, index, stream.seq, due, sent)
                try:
                    if stream.ws.send_nowait(self.payload(stream.frame)):
                        flushers.start_soon(stream.ws.flush)
                except Closed as exc:
                    if not self.closing:
                        self.stream_errors[f"send: closed {exc}"] += 1
                    continue
                self.sent(due, sent)
                stream.seq += 1
                heapq.heappush(heap, (due + self.interval_ns, index))
            await trio.lowlevel.checkpoint()

    async def send_loop(self, index: int, ws: Connection) -> None:
        """trio-websocket's sender, one per session: a stamped frame every interval."""
        due = self.first_due(index)
        frame = bytearray(self.base)
        seq = 0
        try:
            while True:
                delay = due - now_ns()
                if delay > 0:
                    await trio.sleep(delay / 1e9)
                sent = now_ns()
                stamp(frame, index, seq, due, sent)
                await ws.send(self.payload(frame))
                self.sent(due, sent)
                seq += 1
                due += self.interval_ns
        except Closed as exc:
            if not self.closing:
                self.stream_errors[f"send: closed {exc}"] += 1

    async def receive_loop(self, index: int, ws: Connection) -> None:
        """Time every echo by the stamp it carries."""
        get = ws.receive
        proxy = self.opt.target == "proxy"
        size = self.opt.frame_bytes
        while True:
            try:
                message = await get()
            except Closed as exc:
                if not self.closing:
                    self.stream_errors[f"receive: closed {exc}"] += 1
                return
            arrived = now_ns()
            if proxy:
                if isinstance(message, str):
                    self.note_event(message)
                    continue
                pcm: bytes | None = message
            else:
                pcm = live_audio_of(message)
            if pcm is None:
                self.note_event(message)
                continue
            if len(pcm) != size:
                self.bad_size += 1
                if len(pcm) < STAMP.size:
                    continue
            session, _seq, due, sent = read_stamp(pcm)
            if session != index:
                self.misrouted += 1
            phase = self.current
            if phase is not None:
                phase.received += 1
                phase.rtts.append(arrived - sent)
                phase.sched_rtts.append(arrived - due)

    def note_event(self, message: str | bytes) -> None:
        """Count a server message that is not audio, by its top-level key (and error code)."""
        try:
            body: Any = orjson.loads(message)
        except orjson.JSONDecodeError:
            self.events["not JSON"] += 1
            return
        if isinstance(body, dict):
            for key, value in body.items():
                code = value.get("code") or value.get("reason") if isinstance(value, dict) else None
                self.events[f"{key} {code}" if code else key] += 1

    # -- the run ------------------------------------------------------------------------------

    async def ramp(self, senders: trio.Nursery, receivers: trio.Nursery) -> None:
        """Open ``sessions`` sessions, ``ramp_rate`` per second, and start their streams."""

        async def open_one(index: int) -> None:
            ws = await self.timed_open(self.ramp_opens)
            if ws is None:
                return
            self.live[index] = ws
            receivers.start_soon(self.receive_loop, index, ws)
            if isinstance(ws, WebSocket):
                self.streams[index] = Stream(ws, bytearray(self.base))
                heapq.heappush(self.due, (self.first_due(index), index))
            else:
                senders.start_soon(self.send_loop, index, ws)

        started = now_ns()
        gap = 1e9 / self.opt.ramp_rate
        async with trio.open_nursery() as openers:
            for index in range(self.opt.sessions):
                delay = started + index * gap - now_ns()
                if delay > 0:
                    await trio.sleep(delay / 1e9)
                openers.start_soon(open_one, index)
        print("MARK ready", flush=True)

    async def churn_one(self, phase: Phase) -> None:
        ws = await self.timed_open(phase.opens)
        if ws is None:
            phase.open_failures += 1
            return
        started = now_ns()
        await self.close(ws)
        phase.closes.append(now_ns() - started)

    async def churn_paced(self) -> None:
        """Open (and close at once) ``churn_rate`` sessions per second for ``churn_seconds``."""
        phase = self.begin("churn_paced")
        count = round(self.opt.churn_rate * self.opt.churn_seconds)
        gap = 1e9 / self.opt.churn_rate
        in_flight = 0

        async def one() -> None:
            nonlocal in_flight
            in_flight += 1
            try:
                await self.churn_one(phase)
            finally:
                in_flight -= 1

        async with trio.open_nursery() as nursery:
            for k in range(count):
                delay = phase.started_ns + k * gap - now_ns()
                if delay > 0:
                    await trio.sleep(delay / 1e9)
                if in_flight >= CHURN_IN_FLIGHT:
                    phase.skipped += 1
                    continue
                nursery.start_soon(one)
        self.end(phase)

    async def churn_burst(self) -> None:
        """Open and close sessions in ``burst_workers`` closed loops for ``churn_seconds``."""
        phase = self.begin("churn_burst")
        deadline = phase.started_ns + round(self.opt.churn_seconds * 1e9)

        async def worker() -> None:
            while now_ns() < deadline:
                await self.churn_one(phase)

        async with trio.open_nursery() as nursery:
            for _ in range(self.opt.burst_workers):
                nursery.start_soon(worker)
        self.end(phase)

    async def close_all(self) -> None:
        self.closing = True
        async with trio.open_nursery() as nursery:
            for ws in self.live.values():
                nursery.start_soon(self.close, ws)

    def deflate_report(self) -> dict[str, Any]:
        """Was permessage-deflate offered, and how many upgrades accepted it (and how)."""
        answers = self.extension_answers
        declined = answers.get("", 0)
        return {
            "offered": self.opt.deflate_offer,
            "offer": CHROME_DEFLATE_OFFER if self.opt.deflate_offer else None,
            "upgrades": sum(answers.values()),
            "negotiated": sum(answers.values()) - declined,
            "declined": declined,
            "answers": {k: v for k, v in answers.items() if k},
        }

    def report(self) -> dict[str, Any]:
        opt = self.opt
        return {
            "target": opt.target,
            "sessions": opt.sessions,
            "opened": len(self.ramp_opens),
            "setup_ms": summarise_ns(self.ramp_opens.total),
            "setup_parts_ms": self.ramp_opens.parts(),
            "open_errors": dict(self.open_errors.most_common(5)),
            "open_error_count": sum(self.open_errors.values()),
            "stream_errors": dict(self.stream_errors),
            "events": dict(self.events),
            "misrouted": self.misrouted,
            "bad_size": self.bad_size,
            "offered_per_s": round(opt.sessions * 1000 / opt.interval_ms, 1),
            "deflate": self.deflate_report(),
            "phases": {phase.name: phase.report() for phase in self.phases},
        }


async def run(options: Options) -> dict[str, Any]:
    """Run every phase ``options`` asks for and return the results."""
    async with trio.open_nursery() as conns:
        gen = Generator(options, conns)
        async with trio.open_nursery() as receivers:
            async with trio.open_nursery() as senders:
                senders.start_soon(gen.pace, senders)
                await gen.ramp(senders, receivers)
                await trio.sleep(options.warmup)
                if options.duration > 0:
                    window = gen.begin("window")
                    await trio.sleep(options.duration)
                    gen.end(window)
                    if options.hold_after_window:
                        await wait_for_go()
                # Burst (closed loops) first: the open-loop paced phase can swamp a proxy
                # that cannot keep up, and what it leaves behind would spoil the burst.
                if options.burst_workers > 0 and options.churn_seconds > 0:
                    await gen.churn_burst()
                if options.churn_rate > 0 and options.churn_seconds > 0:
                    await gen.churn_paced()
                senders.cancel_scope.cancel()
            print("MARK closing", flush=True)
            await gen.close_all()
        # Sessions that did not answer their close in time still hold reader tasks.
        conns.cancel_scope.cancel()
    return gen.report()


async def wait_for_go() -> None:
    """Wait for a line on stdin (the parent's go-ahead), EOF, or :data:`HOLD_LIMIT` seconds."""
    with trio.move_on_after(HOLD_LIMIT):
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            received = b""
            while b"\n" not in received:
                chunk = await stdin.receive_some(64)
                if not chunk:
                    return
                received += chunk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--target", choices=["proxy", "direct"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--frame-bytes", type=int, default=3200)
    parser.add_argument("--interval-ms", type=float, default=100.0)
    parser.add_argument("--ramp-rate", type=float, default=100.0)
    parser.add_argument("--open-timeout", type=float, default=10.0)
    parser.add_argument("--churn-rate", type=float, default=0.0)
    parser.add_argument("--churn-seconds", type=float, default=0.0)
    parser.add_argument("--burst-workers", type=int, default=0)
    parser.add_argument("--client", choices=["lean", "trio-websocket"], default="lean")
    parser.add_argument("--no-deflate-offer", action="store_true")
    parser.add_argument("--hold-after-window", action="store_true")
    parser.add_argument("--json-out", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(
        target=args.target,
        host=args.host,
        port=args.port,
        sessions=args.sessions,
        warmup=args.warmup,
        duration=args.duration,
        frame_bytes=args.frame_bytes,
        interval_ms=args.interval_ms,
        ramp_rate=args.ramp_rate,
        open_timeout=args.open_timeout,
        churn_rate=args.churn_rate,
        churn_seconds=args.churn_seconds,
        burst_workers=args.burst_workers,
        client=args.client,
        deflate_offer=not args.no_deflate_offer,
        hold_after_window=args.hold_after_window,
    )
    base_frame(options.frame_bytes)  # validates the size before anything starts
    result = trio.run(run, options)
    args.json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
