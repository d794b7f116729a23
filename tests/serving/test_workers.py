"""``WORKERS=2``: one port, two worker processes, one SQLite state store (real processes).

Which worker served a request shows in its log line (``[worker N]``); the tests read it after
each step, one step at a time, so every line is the answer to the step just taken.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from contextlib import AsyncExitStack
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url

from liveproxy.serving.refuser import BAD_REQUEST, MAX_HEAD_BYTES, refuse
from tests.conftest import TEXT_SETUP
from tests.http import HttpResponse, request
from tests.served import Served, eventually, liveproxy_process
from tests.wsclient import BrowserClient, has_key

WORKERS = {
    "WORKERS": "2",
    "LOG_LEVEL": "DEBUG",
    "AUTH_RATE_LIMIT": "0",
    "MAX_SESSIONS_PER_CLIENT": "0",
}
READY_DRAINING = {"error": {"code": "not_ready", "message": "draining"}}
SHUTTING_DOWN = {"error": {"code": "shutting_down", "message": "the server is shutting down"}}
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
TOKEN_ISSUED = "token issued"
REFUSED = "socket refused"
STARTED = r"session \w+ started"


def lines_of(served: Served, event: str) -> list[int]:
    """The worker of every log line with ``event``, in order."""
    return [
        int(n) for n in re.findall(rf"\[worker (\d+)\](?: \[session \w+\])?: {event}", served.text)
    ]


async def next_line(served: Served, event: str, seen: int) -> int:
    """The worker that logs ``event`` for the ``seen + 1``-th time."""
    await served.wait_for(lambda _: len(lines_of(served, event)) > seen)
    found = lines_of(served, event)
    assert len(found) == seen + 1, found
    return found[seen]


async def mint(served: Served) -> tuple[str, int]:
    """A token and the worker that issued it."""
    seen = len(lines_of(served, TOKEN_ISSUED))
    response = await request("127.0.0.1", served.port, "POST", "/api/auth")
    assert response.status == 200, response.body
    return response.json()["session_token"], await next_line(served, TOKEN_ISSUED, seen)


async def open_session(
    served: Served, token: str, stack: AsyncExitStack
) -> tuple[BrowserClient, int]:
    """A session held open until ``stack`` closes; the worker that serves it."""
    seen = len(lines_of(served, STARTED))
    url = f"ws://127.0.0.1:{served.port}/ws?token={token}"
    ws = await stack.enter_async_context(open_websocket_url(url))
    client = BrowserClient(ws)
    await client.send_json(TEXT_SETUP)
    assert "setupComplete" in await client.recv_json()
    return client, await next_line(served, STARTED, seen)


async def refused_on(served: Served, token: str) -> int:
    """Spend ``token`` and expect 4003; the worker that refused it."""
    seen = len(lines_of(served, REFUSED))
    async with open_websocket_url(f"ws://127.0.0.1:{served.port}/ws?token={token}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 4003
    return await next_line(served, REFUSED, seen)


async def test_a_token_minted_by_one_worker_opens_a_session_on_the_other() -> None:
    async with liveproxy_process(**WORKERS) as served, AsyncExitStack() as stack:
        crossings: set[tuple[int, int]] = set()
        for _ in range(60):
            token, minted_by = await mint(served)
            client, opened_on = await open_session(served, token, stack)
            await client.send_json({"type": "text", "text": "hello"})
            await client.recv_until(has_key("serverContent", "turnComplete"))
            await client.ws.aclose()
            crossings.add((minted_by, opened_on))
            if {(1, 2), (2, 1)} <= crossings:
                break
        assert {(1, 2), (2, 1)} <= crossings


async def test_a_token_spent_on_one_worker_is_refused_by_the_other() -> None:
    async with liveproxy_process(**WORKERS) as served, AsyncExitStack() as stack:
        pairs: set[tuple[int, int]] = set()
        for _ in range(60):
            token, _minted_by = await mint(served)
            client, opened_on = await open_session(served, token, stack)
            pairs.add((opened_on, await refused_on(served, token)))
            await client.ws.aclose()
            if {(1, 2), (2, 1)} <= pairs:
                break
        assert {(1, 2), (2, 1)} <= pairs


async def test_a_hundred_concurrent_spends_of_one_token_across_workers_succeed_once() -> None:
    async with liveproxy_process(**WORKERS) as served:
        token, _ = await mint(served)
        outcomes: list[str] = []

        async def spend() -> None:
            url = f"ws://127.0.0.1:{served.port}/ws?token={token}"
            async with open_websocket_url(url) as ws:
                client = BrowserClient(ws)
                try:
                    await client.send_json(TEXT_SETUP)
                    outcomes.append(next(iter(await client.recv_json())))
                except ConnectionClosed as exc:
                    outcomes.append(str(exc.reason and exc.reason.code))

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(spend)
        assert sorted(set(outcomes)) == ["4003", "setupComplete"]
        assert outcomes.count("setupComplete") == 1
        assert set(lines_of(served, REFUSED)) == {1, 2}  # both workers took part


async def test_sessions_spread_over_both_workers_and_all_end_shutdown_on_sigterm() -> None:
    settings = {**WORKERS, "SHUTDOWN_GRACE_SECONDS": "1"}
    async with liveproxy_process(**settings) as served, AsyncExitStack() as stack:
        clients: list[BrowserClient] = []
        workers: list[int] = []
        for _ in range(40):
            token, _ = await mint(served)
            client, worker = await open_session(served, token, stack)
            clients.append(client)
            workers.append(worker)
        assert min(workers.count(1), workers.count(2)) >= 10, workers
        served.process.send_signal(signal.SIGTERM)
        endings: list[tuple[str, int]] = []

        async def ending(client: BrowserClient) -> None:
            ended = await client.wait_closed()
            endings.append((ended.last_event["sessionEnd"]["reason"], ended.code))

        with trio.fail_after(1 + 5):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(ending, client)
        assert endings == [("shutdown", 1001)] * 40
        with trio.fail_after(10):
            assert await served.process.wait() == 0
        assert "Traceback" not in served.text


async def test_a_killed_worker_is_restarted_and_its_places_come_back_within_the_lease() -> None:
    settings = {**WORKERS, "MAX_SESSIONS": "6", "SESSION_LEASE_SECONDS": "2"}
    async with liveproxy_process(**settings) as served, AsyncExitStack() as stack:
        pids = {int(w): int(p) for w, p in re.findall(r"worker (\d) \(pid (\d+)\)", served.text)}
        held: dict[int, list[BrowserClient]] = {1: [], 2: []}
        while len(held[1]) + len(held[2]) < 6:
            token, _ = await mint(served)
            client, worker = await open_session(served, token, stack)
            held[worker].append(client)
        victim = 1 if held[1] else 2
        full = await request("127.0.0.1", served.port, "POST", "/api/auth")
        assert full.json()["error"]["code"] == "at_capacity"

        os.kill(pids[victim], signal.SIGKILL)
        await served.wait_for(lambda t: f"worker {victim} exited (killed by SIGKILL)" in t)
        await served.wait_for(lambda t: t.count(f"worker {victim} (pid") == 2)  # restarted
        free = len(held[victim])
        issued = 0

        async def place_back() -> bool:
            nonlocal issued
            answer = await request("127.0.0.1", served.port, "POST", "/api/auth")
            if answer.status != 200:
                assert answer.json()["error"]["code"] == "at_capacity"
            issued += answer.status == 200
            return issued == free

        # Every place of the dead worker's sessions comes back (each when its lease runs out:
        # a lease taken after the last renewal runs out later than the others).
        waited = await eventually(place_back, 2 * 2 + 2)
        assert waited <= 2 * 2 + 1
        full = await request("127.0.0.1", served.port, "POST", "/api/auth")
        assert full.json()["error"]["code"] == "at_capacity"  # and no more than those
        survivors = held[3 - victim]
        for client in survivors:  # the other worker's sessions never noticed
            await client.send_json({"type": "text", "text": "still here?"})
            await client.recv_until(has_key("serverContent", "turnComplete"))


def worker_pids(served: Served) -> dict[int, int]:
    """Each worker's pid, from the supervisor's ``worker N (pid P) listening`` lines."""
    return {int(w): int(p) for w, p in re.findall(r"worker (\d) \(pid (\d+)\)", served.text)}


async def test_every_socket_is_answered_503_until_a_two_worker_drain_ends() -> None:
    """One worker holds a session, so the drain lasts; the other has exited at once. New
    connections, spread over both sockets by their source ports, all get their 503 at once:
    from the draining worker, or from the supervisor on the exited worker's socket."""
    settings = {**WORKERS, "SHUTDOWN_GRACE_SECONDS": "60"}
    async with liveproxy_process(**settings) as served, AsyncExitStack() as stack:
        pids = worker_pids(served)
        token, _ = await mint(served)
        client, busy = await open_session(served, token, stack)
        served.process.send_signal(signal.SIGTERM)

        async def idle_worker_gone() -> bool:
            try:
                os.kill(pids[3 - busy], 0)
            except ProcessLookupError:
                return True
            return False

        await eventually(idle_worker_gone, 10)
        answers: dict[str, list[HttpResponse]] = {"ready": [], "upgrade": [], "auth": []}

        async def probe(kind: str) -> None:
            with trio.fail_after(2):  # a probe hashed to a socket nobody serves would hang
                if kind == "ready":
                    answer = await request("127.0.0.1", served.port, "GET", "/api/ready")
                elif kind == "upgrade":
                    answer = await request(
                        "127.0.0.1", served.port, "GET", f"/ws?token={token}", headers=UPGRADE
                    )
                else:
                    answer = await request("127.0.0.1", served.port, "POST", "/api/auth", b"{}")
            answers[kind].append(answer)

        def by_supervisor() -> list[HttpResponse]:  # Hypercorn names itself; the supervisor not
            return [a for a in answers["ready"] if "server" not in a.headers]

        for _ in range(8):
            async with trio.open_nursery() as nursery:
                for kind in ("ready",) * 8 + ("upgrade", "auth") * 2:
                    nursery.start_soon(probe, kind)
            if 0 < len(by_supervisor()) < len(answers["ready"]):
                break
        assert 0 < len(by_supervisor()) < len(answers["ready"])  # both sockets were probed
        assert [(a.status, a.json()) for a in answers["ready"]] == [(503, READY_DRAINING)] * len(
            answers["ready"]
        )
        refusals = answers["upgrade"] + answers["auth"]
        assert [(a.status, a.json()) for a in refusals] == [(503, SHUTTING_DOWN)] * len(refusals)
        assert all(a.headers["connection"] == "close" for a in by_supervisor())

        await client.ws.aclose()  # the drain ends with the last session
        with trio.fail_after(10):
            assert await served.process.wait() == 0
        assert "Traceback" not in served.text


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection (or resets it)."""
    chunks = []
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        try:
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
        except trio.BrokenResourceError:
            pass
    return b"".join(chunks)


async def test_the_refuser_answers_503_and_bounds_what_a_client_controls() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with sock, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(refuse, sock, max_connections=4, connection_seconds=1))
            ready = await request("127.0.0.1", port, "GET", "/api/ready?probe=1")
            assert (ready.status, ready.json()) == (503, READY_DRAINING)
            assert ready.headers["connection"] == "close"
            assert ready.headers["content-type"] == "application/json"
            head = await request("127.0.0.1", port, "HEAD", "/api/ready")
            assert (head.status, head.body) == (503, b"")
            for answer in (
                await request("127.0.0.1", port, "POST", "/api/auth", b'{"session_duration": 60}'),
                await request("127.0.0.1", port, "GET", "/ws?token=t", headers=UPGRADE),
                await request("127.0.0.1", port, "GET", "/"),
            ):
                assert (answer.status, answer.json()) == (503, SHUTTING_DOWN)
            assert await raw(port, b"\x16\x03\x01 not http\r\n\r\n") == BAD_REQUEST
            huge = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
            assert await raw(port, huge) in (b"", BAD_REQUEST)

            # Four silent connections take every place: a fifth is closed at once, unanswered.
            silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
            await trio.testing.wait_all_tasks_blocked()  # the refuser has them all
            started = trio.current_time()
            assert await raw(port, b"GET /api/ready HTTP/1.1\r\nHost: x\r\n\r\n") == b""
            assert trio.current_time() - started < 0.5
            for stream in silent:  # each is closed when its second is up
                assert await stream.receive_some(1) == b""
                await stream.aclose()
            assert trio.current_time() - started < 2

            # A head sent a byte at a time is cut off at the connection's deadline too.
            async with await trio.open_tcp_stream("127.0.0.1", port) as slow:
                started = trio.current_time()
                with pytest.raises(trio.BrokenResourceError):  # noqa: PT012 - until it is cut
                    for byte in b"GET /api/ready HTTP/1.1\r\nHost: x\r\n" * 10:
                        await slow.send_all(bytes([byte]))
                        await trio.sleep(0.1)
                assert 1 <= trio.current_time() - started < 2.5
            ready = await request("127.0.0.1", port, "GET", "/api/ready")
            assert ready.status == 503  # its places are back
            nursery.cancel_scope.cancel()
        assert sock.fileno() != -1  # the refuser closed its own copy, not the socket
