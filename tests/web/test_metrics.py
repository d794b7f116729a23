"""``METRICS_BIND``: Prometheus metrics of real ``liveproxy serve`` processes, one and two workers.

Each test drives sessions with known endings, then scrapes ``/metrics`` and checks exact counts
(summed over the workers with ``WORKERS=2``, including a worker killed with ``SIGKILL``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import h11
import psutil
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from liveproxy.emulator import Emulator, Faults
from liveproxy.serving.metrics_listener import KEEP_ALIVE_SECONDS, SEND_TIMEOUT_SECONDS
from liveproxy.web.metrics import error_code
from tests.conftest import TEXT_SETUP
from tests.http import HttpResponse, request
from tests.metrics_scrape import metrics_port, scrape, until_scraped
from tests.served import Served, eventually, liveproxy_process
from tests.wsclient import BrowserClient, Ended, has_key

METRICS = {"METRICS_BIND": "127.0.0.1:0", "MAX_SESSIONS_PER_CLIENT": "0"}


async def mint(port: int, duration: int | None = None) -> str:
    body = None if duration is None else b'{"session_duration": %d}' % duration
    response = await request("127.0.0.1", port, "POST", "/api/auth", body)
    assert response.status == 200, response.body
    token: str = response.json()["session_token"]
    return token


@attrs.define
class Browser:
    """A browser session: what it sent and received."""

    client: BrowserClient
    sent: int = 0
    received: int = 0

    async def send(self, message: Any) -> None:
        await self.client.send_json(message)
        self.sent += 1

    async def until(self, key: str, inner: str | None = None) -> None:
        self.received += len(await self.client.recv_until(has_key(key, inner)))

    async def closed(self) -> Ended:
        with trio.fail_after(10):
            ended = await self.client.wait_closed()
        self.received += len(ended.frames)
        return ended


@asynccontextmanager
async def browser(port: int, token: str, setup: Any = TEXT_SETUP) -> AsyncIterator[Browser]:
    """A browser socket that has sent ``setup`` (and got ``setupComplete`` for a good one)."""
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    async with open_websocket_url(url) as ws:
        session = Browser(BrowserClient(ws))
        await session.send(setup)
        if setup is TEXT_SETUP:
            await session.until("setupComplete")
        yield session


async def test_one_process_counts_sessions_tokens_frames_and_reconnects(
    emulator: Emulator, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    settings = {
        **METRICS,
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "AUTH_RATE_LIMIT": "6/hour",
        "SESSION_MIN_SECONDS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    async with liveproxy_process(**settings) as served:
        port = await metrics_port(served)
        assert not (directory / "counter_999999.db").exists()  # the operator's, emptied
        first = await scrape(port)
        assert first.value("liveproxy_sessions_live") == 0
        assert first.value("liveproxy_tokens_total", result="issued") == 0
        assert {"liveproxy_tokens_total", "liveproxy_frames_total"} <= first.names()
        sessions: list[Browser] = []

        # Two at once (browser_closed): the live gauge goes up, then back to 0.
        tokens = [await mint(served.port), await mint(served.port)]
        async with browser(served.port, tokens[0]) as one, browser(served.port, tokens[1]) as two:
            sessions += [one, two]
            assert (await scrape(port)).value("liveproxy_sessions_live") == 2
            await one.send({"type": "text", "text": "hello"})
            await one.until("serverContent", "turnComplete")
        await until_scraped(port, "liveproxy_sessions_live", 0)

        async with browser(served.port, await mint(served.port, duration=1)) as timed:
            sessions.append(timed)
            assert (await timed.closed()).last_event["sessionEnd"]["reason"] == "time_limit"

        bad_setup = {"setup": {"no_such_field": True}}
        async with browser(served.port, await mint(served.port), bad_setup) as invalid:
            sessions.append(invalid)
            assert (await invalid.closed()).last_event["error"]["code"] == "invalid_setup"

        emulator.queue_faults(Faults(drop_after=2))
        async with browser(served.port, await mint(served.port)) as resumed:
            sessions.append(resumed)
            await resumed.send({"type": "text", "text": "first"})
            await resumed.until("serverContent", "turnComplete")
            await resumed.send({"type": "text", "text": "second, dropped"})
            await resumed.until("sessionStatus")  # reconnecting
            await resumed.until("sessionStatus")  # resumed
            await resumed.until("serverContent", "turnComplete")

        await mint(served.port)  # the sixth and last of the hour
        refused = await request("127.0.0.1", served.port, "POST", "/api/auth")
        assert refused.json()["error"]["code"] == "rate_limited"
        evil = {"Origin": "https://evil.example"}
        forbidden = await request("127.0.0.1", served.port, "POST", "/api/auth", headers=evil)
        assert forbidden.json()["error"]["code"] == "forbidden_origin"
        async with open_websocket_url(f"ws://127.0.0.1:{served.port}/ws?token=spent") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()

        found = await until_scraped(
            port, "liveproxy_sockets_refused_total", 1, reason="unauthorized"
        )
        assert found.value("liveproxy_sessions_live") == 0
        assert found.value("liveproxy_sessions_total", reason="browser_closed") == 3
        assert found.value("liveproxy_sessions_total", reason="time_limit") == 1
        assert found.value("liveproxy_sessions_total", reason="invalid_setup") == 1
        assert sum(v for (n, _), v in found.samples.items() if n == "liveproxy_sessions_total") == 5
        assert found.value("liveproxy_session_setup_seconds_count") == 4  # not the invalid one
        assert 0 < found.value("liveproxy_session_setup_seconds_sum") < 4 * 5
        assert found.value("liveproxy_upstream_reconnects_total") == 1
        assert found.value("liveproxy_slow_clients_total") == 0
        assert found.value("liveproxy_tokens_total", result="issued") == 6
        assert found.value("liveproxy_tokens_total", result="rate_limited") == 1
        assert found.value("liveproxy_tokens_total", result="forbidden_origin") == 1
        sent = sum(s.sent for s in sessions)
        assert sent == 2 + 1 + 1 + 1 + 3
        assert found.value("liveproxy_frames_total", direction="browser_in") == sent
        received = sum(s.received for s in sessions)
        assert found.value("liveproxy_frames_total", direction="browser_out") >= received > 0
    assert "Traceback" not in served.text


async def browser_on(
    served: Served, stack: AsyncExitStack, seen: list[int]
) -> tuple[BrowserClient, int]:
    """A session past ``setupComplete`` held until ``stack`` closes, and its worker."""
    token = await mint(served.port)
    url = f"ws://127.0.0.1:{served.port}/ws?token={token}"
    client = BrowserClient(await stack.enter_async_context(open_websocket_url(url)))
    await client.send_json(TEXT_SETUP)
    assert "setupComplete" in await client.recv_json()
    pattern = r"\[worker (\d+)\] \[session \w+\]: session \w+ started"
    await served.wait_for(lambda text: len(re.findall(pattern, text)) > len(seen))
    seen[:] = [int(n) for n in re.findall(pattern, served.text)]
    return client, seen[-1]


async def test_two_workers_are_added_up_and_a_killed_workers_live_sessions_go(
    tmp_path: Path,
) -> None:
    settings = {**METRICS, "WORKERS": "2", "AUTH_RATE_LIMIT": "0", "SHUTDOWN_GRACE_SECONDS": "0"}
    settings["XDG_RUNTIME_DIR"] = str(tmp_path)  # where its private metrics directory goes
    async with liveproxy_process(**settings) as served, AsyncExitStack() as stack:
        port = await metrics_port(served)
        pids = {int(w): int(p) for w, p in re.findall(r"worker (\d) \(pid (\d+)\)", served.text)}
        held: dict[int, list[BrowserClient]] = {1: [], 2: []}
        seen: list[int] = []
        for _ in range(40):
            client, worker = await browser_on(served, stack, seen)
            held[worker].append(client)
            if min(len(held[1]), len(held[2])) >= 2:
                break
        assert min(len(held[1]), len(held[2])) >= 2, seen
        live = len(held[1]) + len(held[2])
        await until_scraped(port, "liveproxy_sessions_live", live)

        for worker in (1, 2):  # one session ends on each
            await held[worker].pop().ws.aclose()
        found = await until_scraped(port, "liveproxy_sessions_live", live - 2)
        found = await until_scraped(port, "liveproxy_sessions_total", 2, reason="browser_closed")
        assert found.value("liveproxy_tokens_total", result="issued") == live
        assert found.value("liveproxy_frames_total", direction="browser_in") == 2  # their setups
        assert found.value("liveproxy_session_setup_seconds_count") == live

        victim = 1
        os.kill(pids[victim], signal.SIGKILL)
        await served.wait_for(lambda t: t.count(f"worker {victim} (pid") == 2)  # restarted
        after = await until_scraped(port, "liveproxy_sessions_live", len(held[2]))
        # What the dead worker counted stays in the totals.
        assert after.value("liveproxy_sessions_total", reason="browser_closed") == 2
        assert after.value("liveproxy_tokens_total", result="issued") == live
        assert after.value("liveproxy_session_setup_seconds_count") == live

        client, worker = await browser_on(served, stack, seen)  # the host still counts
        await until_scraped(port, "liveproxy_sessions_live", len(held[2]) + 1)
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await served.process.wait()
    assert not os.listdir(tmp_path)  # the private directories are gone


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the listener closes the connection (or resets it: it
    does not read what is left of a request it refused)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    chunks = []
    async with stream:
        with trio.fail_after(5):
            try:
                await stream.send_all(data)
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            except trio.BrokenResourceError:
                pass
    return b"".join(chunks)


async def test_the_listener_answers_only_metrics_and_survives_hostile_clients(
    tmp_path: Path,
) -> None:
    async with liveproxy_process(**METRICS, XDG_RUNTIME_DIR=str(tmp_path)) as served:
        port = await metrics_port(served)
        # A client that asks for many answers and reads none (a small receive window fills).
        unread = trio.socket.socket()
        unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await unread.connect(("127.0.0.1", port))
        pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        with trio.move_on_after(1):
            sent = 0
            while sent < len(pipelined):
                sent += await unread.send(pipelined[sent:])
        unread_port = unread.getsockname()[1]
        answers: dict[str, HttpResponse] = {
            path: await request("127.0.0.1", port, "GET", path) for path in ("/", "/metricsx")
        }
        assert {a.status for a in answers.values()} == {404}
        assert (await request("127.0.0.1", port, "POST", "/metrics", b"{}")).status == 405
        head = await request("127.0.0.1", port, "HEAD", "/metrics")
        assert (head.status, head.body) == (200, b"")
        assert (await request("127.0.0.1", port, "GET", "/metrics?x=1")).status == 200
        assert (await raw(port, b"\x16\x03\x01 not http\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await raw(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")).startswith(b"HTTP/1.1 505")
        upgrade = (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await raw(port, upgrade)).startswith(b"HTTP/1.1 403")
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        answer = await raw(port, huge)  # refused, or reset with the head unread
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(20)]
        closing = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert (await raw(port, closing)).startswith(b"HTTP/1.1 200")  # idle ones take no place
        with trio.fail_after(KEEP_ALIVE_SECONDS + 2):  # and the listener closes them
            for stream in idle:
                assert await stream.receive_some(1) == b""
                await stream.aclose()
        await scrape(port)

        async def unread_dropped() -> bool:
            held = psutil.Process(served.process.pid).net_connections(kind="tcp")
            return all(not c.raddr or c.raddr.port != unread_port for c in held)

        await eventually(unread_dropped, SEND_TIMEOUT_SECONDS + 5)
        unread.close()
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await served.process.wait() == 0
    assert "Traceback" not in served.text
    assert not os.listdir(tmp_path)  # its private metrics directory is gone


async def test_slow_connections_do_not_starve_the_scrapes(tmp_path: Path) -> None:
    """Ten connections trickling a request head a byte every 0.5 s (each opened again when the
    listener closes it) take nothing from the scrapes: thirty in a row are all answered."""
    async with liveproxy_process(**METRICS, XDG_RUNTIME_DIR=str(tmp_path)) as served:
        port = await metrics_port(served)

        async def trickle(task_status: trio.TaskStatus[None]) -> None:
            head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            task_status.started()
            while True:
                async with stream:
                    with suppress(trio.BrokenResourceError):
                        for byte in head:
                            await stream.send_all(bytes([byte]))
                            await trio.sleep(0.5)
                stream = await trio.open_tcp_stream("127.0.0.1", port)

        answered = 0
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                await nursery.start(trickle)
            for _ in range(30):
                with trio.move_on_after(5):
                    try:
                        response = await request("127.0.0.1", port, "GET", "/metrics")
                    except (trio.BrokenResourceError, h11.RemoteProtocolError):
                        continue
                    answered += response.status == 200
            nursery.cancel_scope.cancel()
        assert answered == 30
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await served.process.wait() == 0
    assert "Traceback" not in served.text


def test_every_count_of_the_metrics_object() -> None:
    """The counts no process test reaches on its own (a slow client), in a fresh interpreter:
    prometheus_client must be imported after its directory is set."""
    script = """
import sys, tempfile
from liveproxy.contract.endings import BROWSER_CLOSED
from liveproxy.contract.errors import SlowClient
from liveproxy.serving.metrics_listener import scraper
from liveproxy.web.metrics import PrometheusMetrics

metrics = PrometheusMetrics(tempfile.mkdtemp())
metrics.session_started()
metrics.session_ended(SlowClient("slow"), 2)
metrics.session_ended(BROWSER_CLOSED, 0)
metrics.setup_completed(0.3)
metrics.socket_refused("at_capacity")
metrics.token_result("too_many_sessions")
metrics.socket_frames(5, 7)
sys.stdout.write(scraper(metrics.directory)().decode())
"""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    lines = set(done.stdout.splitlines())
    for line in (
        "liveproxy_sessions_live 1.0",
        'liveproxy_sessions_total{reason="slow_client"} 1.0',
        'liveproxy_sessions_total{reason="browser_closed"} 1.0',
        "liveproxy_slow_clients_total 1.0",
        "liveproxy_upstream_reconnects_total 2.0",
        'liveproxy_session_setup_seconds_bucket{le="0.5"} 1.0',
        'liveproxy_sockets_refused_total{reason="at_capacity"} 1.0',
        'liveproxy_tokens_total{result="too_many_sessions"} 1.0',
        'liveproxy_tokens_total{result="issued"} 0.0',
        'liveproxy_frames_total{direction="browser_in"} 5.0',
        'liveproxy_frames_total{direction="browser_out"} 7.0',
    ):
        assert line in lines, done.stdout


def test_an_auth_error_is_counted_by_its_code_and_anything_else_by_its_status() -> None:
    assert error_code(429, b'{"error": {"code": "rate_limited", "message": "m"}}') == "rate_limited"
    assert error_code(500, b"<html>oops</html>") == "http_500"
    assert error_code(400, b'{"error": {"code": "Not A Code!"}}') == "http_400"
    assert error_code(400, b'{"error": {"code": "' + b"x" * 100 + b'"}}') == "http_400"
