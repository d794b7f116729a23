"""``make bench``: what liveproxy adds to real-time audio sessions, against a direct baseline.

Starts three processes (the Gemini Live emulator in fast echo mode, ``liveproxy serve`` and, for
each step, the load generator), sweeps the number of concurrent sessions via the proxy and
directly against the emulator, then measures session churn; with ``--workers 1,2`` the proxy is
restarted with ``WORKERS=w`` and swept again for each worker count. Prints a Markdown report
and writes ``run-<time>.{md,json,png}`` under ``--out-dir`` (not committed); only ``--publish``
also copies them to ``latest.{md,json,png}``, the reference results README.md links.
See ``bench/README.md`` for how to read the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.procs import (
    REPO,
    Child,
    ChildFailed,
    Snapshot,
    Watcher,
    cpu_percent,
    read_line,
    sessions_per_worker,
    spawn,
    start_emulator,
    start_proxy,
)

DEFAULT_SESSIONS = "1,50,100,200,300,400"
#: A proxy step past this is saturated and ends the sweep.
SATURATED_DELIVERY = 0.90
SATURATED_P99_MS = 1000.0
#: Between steps: the proxy and the emulator count as idle under this CPU % over a tick.
SETTLED_PCT = 5.0
SETTLE_TICK = 0.25


def parse_counts(text: str, what: str = "session counts") -> list[int]:
    """``"1,50,100"`` -> ``[1, 50, 100]`` (positive, ascending, no repeats)."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{what} must be positive integers")
    return values


def parse_sessions(text: str) -> list[int]:
    return parse_counts(text, "session counts")


def parse_workers(text: str) -> list[int]:
    return parse_counts(text, "worker counts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--sessions", type=parse_sessions, default=DEFAULT_SESSIONS, help="the sweep of N")
    add(
        "--workers",
        type=parse_workers,
        default="1",
        help="worker counts: the sweep runs once per count, the proxy restarted with WORKERS=w",
    )
    add("--duration", type=float, default=8.0, help="measurement window per step, seconds")
    add("--warmup", type=float, default=2.0, help="streaming before each window, seconds")
    add("--frame-bytes", type=int, default=3200, help="PCM bytes per frame (3200 = 100 ms)")
    add("--interval-ms", type=float, default=100.0, help="one frame per session every ...")
    add("--ramp-rate", type=float, default=100.0, help="sessions opened per second at ramp-up")
    add("--churn-seconds", type=float, default=4.0, help="length of each churn phase")
    add("--churn-rate", type=float, default=200.0, help="paced churn: opens per second")
    add("--churn-streams", type=int, default=100, help="sessions streaming during churn")
    add("--burst-workers", type=int, default=16, help="burst churn: concurrent open loops")
    add("--no-churn", action="store_true", help="skip the churn measurement")
    add("--no-direct", action="store_true", help="skip the direct-to-emulator baseline")
    add(
        "--client",
        choices=["lean", "trio-websocket"],
        default="lean",
        help="the generator's WebSocket client (trio-websocket: a costlier cross-check)",
    )
    add(
        "--no-deflate-offer",
        action="store_true",
        help="do not offer permessage-deflate (by default every upgrade offers it as Chrome does)",
    )
    add(
        "--ws-compression",
        action="store_true",
        help="run the proxy with WS_COMPRESSION=true, so it accepts the deflate offer",
    )
    add("--out-dir", type=Path, default=REPO / "bench" / "results", help="where results go")
    add(
        "--publish",
        action="store_true",
        help="also copy the run to latest.{md,json,png} in --out-dir, the committed reference "
        "results README.md links (for a full default run on a quiet machine)",
    )
    return parser


class Bench:
    """The emulator and the proxy for one run, and the load-generator steps against them."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.children: list[Child] = []
        self.idle_rss = 0
        self.workers = 0
        self.proxy: Child
        self.emulator: Child
        self.watcher: Watcher
        self.proxy_port = self.emulator_port = 0
        #: Sessions per worker at the end of the last proxy step's window.
        self.per_worker: list[dict[str, int]] = []

    def __enter__(self) -> Bench:
        emulator, self.emulator_port = start_emulator(self.work)
        self.children.append(emulator)
        self.emulator = emulator
        self.use_workers(self.args.workers[0])
        return self

    def use_workers(self, workers: int) -> None:
        """(Re)start the proxy with ``WORKERS=workers`` (stopping the one running, if any)."""
        if self.workers:
            self.proxy.stop()
            self.children.remove(self.proxy)
        proxy, self.proxy_port = start_proxy(
            self.work,
            self.emulator_port,
            workers=workers,
            ws_compression=self.args.ws_compression,
        )
        self.children.append(proxy)
        self.proxy = proxy
        self.workers = workers
        self.watcher = Watcher(proxy, self.emulator)
        time.sleep(0.5)
        self.idle_rss = proxy.rss()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in reversed(self.children):
            child.stop()

    def loadgen(
        self,
        target: str,
        sessions: int,
        extra: Sequence[str],
        budget: float,
        *,
        hold: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Snapshot]]:
        """Run the load generator once; return its results and a snapshot per ``MARK``. With
        ``hold`` the sessions stay open after the window until :attr:`per_worker` has been
        counted.

        Raises:
            ChildFailed: it failed, or took longer than ``budget`` seconds.
        """
        args = self.args
        for child in self.children:
            if not child.alive():
                raise ChildFailed(f"{child.name} died:\n{child.log_tail()}")
        port = self.proxy_port if target == "proxy" else self.emulator_port
        out = self.work / f"loadgen-{target}-{sessions}-{time.monotonic_ns()}.json"
        argv = [sys.executable, "-m", "bench.loadgen", "--target", target, "--port", str(port)]
        argv += ["--sessions", str(sessions), "--frame-bytes", str(args.frame_bytes)]
        argv += ["--interval-ms", str(args.interval_ms), "--ramp-rate", str(args.ramp_rate)]
        argv += ["--warmup", str(args.warmup), "--client", args.client, "--json-out", str(out)]
        if args.no_deflate_offer:
            argv.append("--no-deflate-offer")
        if hold:
            argv.append("--hold-after-window")
        argv += list(extra)
        settled = self.settle()
        child = spawn("loadgen", argv, self.work, stdout_pipe=True, stdin_pipe=hold)
        self.watcher.extra["loadgen"] = child.cpu_seconds
        marks: dict[str, Snapshot] = {}
        deadline = time.monotonic() + budget
        self.per_worker = []
        try:
            while (line := read_line(child, deadline - time.monotonic())) is not None:
                if line.startswith("MARK "):
                    marks[line[5:]] = self.watcher.snapshot()
                    if hold and line == "MARK window_end":
                        self.per_worker = sessions_per_worker(self.proxy, self.proxy_port, child)
                        child.tell("go")
            child.popen.wait(max(1.0, deadline - time.monotonic()))
        except (TimeoutError, subprocess.TimeoutExpired):
            raise ChildFailed(f"the load generator took over {budget:.0f}s") from None
        finally:
            child.stop()
            del self.watcher.extra["loadgen"]
        if child.popen.returncode != 0:
            raise ChildFailed(f"the load generator failed:\n{child.log_tail()}")
        result: dict[str, Any] = json.loads(out.read_bytes())
        result["settled_before_s"] = settled
        return result, marks

    def settle(self, limit: float = 15.0) -> float | None:
        """Wait (up to ``limit`` seconds) until the proxy and the emulator are idle, so one
        step's teardown does not spill into the next step's measurement. Returns the seconds
        waited, or None when they were still busy at the limit (noted in the results: a proxy
        that stays busy after its sessions closed may be leaking work)."""
        started = time.monotonic()
        before = self.watcher.snapshot()
        while time.monotonic() - started < limit:
            time.sleep(SETTLE_TICK)
            after = self.watcher.snapshot()
            cpu = cpu_percent(before, after)
            if cpu["proxy"] < SETTLED_PCT and cpu["emulator"] < SETTLED_PCT:
                return round(time.monotonic() - started, 2)
            before = after
        return None

    def _budget(self, sessions: int, seconds: float) -> float:
        ramp = sessions / float(self.args.ramp_rate)
        return ramp + float(self.args.warmup) + seconds + 90.0

    def step(self, target: str, sessions: int) -> dict[str, Any]:
        """One sweep step: ``sessions`` streaming via ``target``, measured over the window."""
        args = self.args
        extra = ["--duration", str(args.duration)]
        result, marks = self.loadgen(
            target, sessions, extra, self._budget(sessions, args.duration), hold=target == "proxy"
        )
        start, end = marks["window_start"], marks["window_end"]
        window = result["phases"]["window"]
        cpu = cpu_percent(start, end)
        seconds = window["seconds"]
        offered = result["offered_per_s"]
        delivered = window["received_per_s"] or 0.0

        def ms_per_frame(name: str) -> float | None:
            used = end.cpu[name] - start.cpu[name]
            return round(1000 * used / frames, 4) if frames else None

        frames: int = window["received"]

        step: dict[str, Any] = {
            "target": target,
            "sessions": sessions,
            "workers": self.workers if target == "proxy" else None,
            "opened": result["opened"],
            "offered_per_s": offered,
            "sent_per_s": window["sent_per_s"],
            "delivered_per_s": delivered,
            "delivered_ratio": round(delivered / offered, 4) if offered else None,
            "window_s": seconds,
            "rtt_ms": window["rtt_ms"],
            "sched_rtt_ms": window["sched_rtt_ms"],
            "send_lag_ms": window["send_lag_ms"],
            "setup_ms": result["setup_ms"],
            "setup_parts_ms": result["setup_parts_ms"],
            "cpu_pct": cpu,
            "proxy_cpu_ms_per_frame": ms_per_frame("proxy") if target == "proxy" else None,
            "emulator_cpu_ms_per_frame": ms_per_frame("emulator"),
            "loadgen_cpu_ms_per_frame": ms_per_frame("loadgen"),
            "open_errors": result["open_errors"],
            "stream_errors": result["stream_errors"],
            "events": result["events"],
            "misrouted": result["misrouted"],
            "bad_size": result["bad_size"],
            "settled_before_s": result["settled_before_s"],
            "deflate": result["deflate"],
        }
        if target == "proxy":
            step["sessions_per_worker"] = self.per_worker
            proxy_cost, emulator_cost = (
                step["proxy_cpu_ms_per_frame"],
                step["emulator_cpu_ms_per_frame"],
            )
            step["proxy_vs_emulator_cpu"] = (
                round(proxy_cost / emulator_cost, 2) if proxy_cost and emulator_cost else None
            )
            rss = end.proxy_rss
            step["proxy_rss_bytes"] = rss
            live = max(1, result["opened"])
            step["rss_per_session_kib"] = round((rss - self.idle_rss) / live / 1024, 1)
        step["saturated"] = saturated(step)
        step["flags"] = report.flags(step, os.cpu_count() or 1)
        return step

    def churn(self, target: str) -> dict[str, Any]:
        """Open and close sessions while ``--churn-streams`` others stream: burst, then paced."""
        args = self.args
        extra = ["--duration", "0", "--churn-seconds", str(args.churn_seconds)]
        extra += ["--churn-rate", str(args.churn_rate), "--burst-workers", str(args.burst_workers)]
        streams = args.churn_streams
        result, marks = self.loadgen(
            target, streams, extra, self._budget(streams, 2 * args.churn_seconds + 30)
        )
        churn: dict[str, Any] = {
            "target": target,
            "workers": self.workers if target == "proxy" else None,
            "streams": streams,
            "opened_streams": result["opened"],
            "stream_errors": result["stream_errors"],
            "open_errors": result["open_errors"],
            "settled_before_s": result["settled_before_s"],
            "deflate": result["deflate"],
        }
        for name, key in (("churn_burst", "burst"), ("churn_paced", "paced")):
            phase = result["phases"].get(name)
            if phase is None:
                continue
            cpu = cpu_percent(marks[f"{name}_start"], marks[f"{name}_end"])
            # From the first open started to the last one finished: opens that complete late
            # stretch the span, so a proxy that falls behind shows a lower rate.
            span = phase["seconds"]
            churn[key] = {
                "seconds": phase["seconds"],
                "opened": phase["opened"],
                "open_failures": phase["open_failures"],
                "skipped": phase["skipped"],
                "opens_per_s": round(phase["opened"] / span, 1) if span else None,
                "open_ms": phase["open_ms"],
                "open_parts_ms": phase["open_parts_ms"],
                "close_ms": phase["close_ms"],
                "stream_rtt_ms": phase["rtt_ms"],
                "stream_delivered_per_s": phase["received_per_s"],
                "cpu_pct": cpu,
            }
        churn["paced"]["offered_per_s"] = args.churn_rate
        churn["paced"]["scheduled"] = round(args.churn_rate * args.churn_seconds)
        churn["burst"]["workers"] = args.burst_workers
        return churn


def saturated(step: dict[str, Any]) -> bool:
    """Delivered under 90 % of offered, a p99 over 1 s, or sessions that did not open."""
    p99 = step["sched_rtt_ms"]["p99"]
    ratio = step["delivered_ratio"]
    return (
        ratio is None
        or ratio < SATURATED_DELIVERY
        or p99 is None
        or p99 > SATURATED_P99_MS
        or step["opened"] < step["sessions"]
    )


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip()


def _meta(args: argparse.Namespace, started: datetime) -> dict[str, Any]:
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "started": started.isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "liveproxy")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "options": options,
    }


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def sweep(bench: Bench, direct: dict[int, dict[str, Any]], first: bool) -> dict[str, Any]:
    """The session sweep and churn with the proxy ``bench`` runs now. Direct steps are measured
    once per N (``direct`` keeps them) and reused by later sweeps; direct churn only in the
    ``first`` sweep."""
    args = bench.args
    clock = time.monotonic()
    _progress(
        f"liveproxy WORKERS={bench.workers} :{bench.proxy_port}, emulator :{bench.emulator_port} "
        f"(idle RSS {bench.idle_rss / 2**20:.1f} MiB)"
    )
    steps: list[dict[str, Any]] = []
    stop_reason = None
    for sessions in args.sessions:
        entry: dict[str, Any] = {"sessions": sessions, "proxy": bench.step("proxy", sessions)}
        _progress(report.progress_line(entry["proxy"]))
        if not args.no_direct:
            if sessions in direct:
                entry["direct"] = direct[sessions]
                entry["direct_reused"] = True
            else:
                entry["direct"] = direct[sessions] = bench.step("direct", sessions)
                _progress(report.progress_line(entry["direct"]))
        steps.append(entry)
        if entry["proxy"]["saturated"]:
            stop_reason = f"the proxy saturated at N={sessions}"
            break
    churn: dict[str, Any] = {}
    if not args.no_churn:
        churn["proxy"] = bench.churn("proxy")
        _progress(report.churn_line(churn["proxy"]))
        if not args.no_direct and first:
            churn["direct"] = bench.churn("direct")
            _progress(report.churn_line(churn["direct"]))
    return {
        "workers": bench.workers,
        "wall_seconds": round(time.monotonic() - clock, 1),
        "idle_rss_bytes": bench.idle_rss,
        "steps": steps,
        "stop_reason": stop_reason,
        "churn": churn,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The whole run: per worker count, the sweep, then churn; returns the results document."""
    started = datetime.now(UTC)
    meta = _meta(args, started)  # before the proxy starts: the code it runs
    clock = time.monotonic()
    sweeps: list[dict[str, Any]] = []
    direct: dict[int, dict[str, Any]] = {}
    with Bench(args, work) as bench:
        for index, workers in enumerate(args.workers):
            if index:
                bench.use_workers(workers)
            sweeps.append(sweep(bench, direct, first=not index))
    document: dict[str, Any] = {
        "meta": meta,
        "wall_seconds": round(time.monotonic() - clock, 1),
        "sweeps": sweeps,
    }
    report.finish(document)
    return document


def write_results(document: dict[str, Any], out_dir: Path, *, publish: bool) -> list[Path]:
    """Write ``run-<time>.{md,json,png}`` under ``out_dir``; with ``publish``, copy them to
    ``latest.*`` there too. Returns the files written.

    Not :func:`bench.report.write`, which always replaces ``latest.*``: a quick run with a few
    options must not overwrite the reference results.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(document["meta"]["started"]).strftime("%Y%m%d-%H%M%S")
    run = report.Written(*(out_dir / f"run-{stamp}.{ext}" for ext in ("md", "json", "png")))
    run.markdown.write_text(report.markdown(document))
    run.json.write_text(json.dumps(document, indent=2) + "\n")
    report.plot(document, run.png)
    written = list(run.all())
    if publish:
        latest = report.Written(*(out_dir / f"latest.{ext}" for ext in ("md", "json", "png")))
        for source, target in zip(run.all(), latest.all(), strict=True):
            shutil.copyfile(source, target)
        written += latest.all()
    return written


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(args.sessions, str):
        args.sessions = parse_sessions(args.sessions)
    if isinstance(args.workers, str):
        args.workers = parse_workers(args.workers)
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="liveproxy-bench-"))
    try:
        document = run(args, work)
    except ChildFailed as exc:
        print(f"bench failed: {exc}\n(logs kept in {work})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench interrupted (logs kept in {work})", file=sys.stderr)
        return 130
    shutil.rmtree(work, ignore_errors=True)
    paths = write_results(document, args.out_dir, publish=args.publish)
    print(paths[0].read_text())
    _progress(f"wrote {', '.join(str(p) for p in paths)}")
    if not args.publish:
        _progress("latest.* left as they were (--publish replaces them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
