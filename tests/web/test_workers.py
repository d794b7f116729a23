"""``WORKERS=2``: one port, two worker processes, one SQLite state store (real processes).

Which worker served a request shows in its log line (``[worker N]``); the tests read it after
each step, one step at a time, so every line is the answer to the step just taken.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import AsyncExitStack

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.conftest import TEXT_SETUP
from tests.http import request
from tests.served import Served, eventually, liveproxy_process
from tests.wsclient import BrowserClient, has_key

WORKERS = {
    "WORKERS": "2",
    "LOG_LEVEL": "DEBUG",
    "AUTH_RATE_LIMIT": "0",
    "MAX_SESSIONS_PER_CLIENT": "0",
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
