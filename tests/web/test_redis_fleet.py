"""Two ``liveproxy serve`` instances (two "hosts") sharing one real ``redis-server``.

Tokens, ``MAX_SESSIONS`` and leases hold across both; a killed instance's places come back
within the lease time; Redis stopped mid-test costs new sign-ins only, and everything recovers
when it is back.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.conftest import TEXT_SETUP
from tests.http import HttpResponse, request
from tests.redis_server import RedisServer
from tests.served import Served, eventually, liveproxy_process
from tests.wsclient import BrowserClient, has_key

LEASE = 2.0


@asynccontextmanager
async def two_hosts(redis: RedisServer, **settings: str) -> AsyncIterator[tuple[Served, Served]]:
    env = {
        "STATE_URL": redis.url,
        "SESSION_LEASE_SECONDS": str(LEASE),
        "AUTH_RATE_LIMIT": "0",
        "MAX_SESSIONS_PER_CLIENT": "0",
        **settings,
    }
    async with liveproxy_process(**env) as a, liveproxy_process(**env) as b:
        yield a, b


async def auth(host: Served) -> HttpResponse:
    return await request("127.0.0.1", host.port, "POST", "/api/auth")


async def mint(host: Served) -> str:
    response = await auth(host)
    assert response.status == 200, response.body
    token: str = response.json()["session_token"]
    return token


async def open_session(host: Served, token: str, stack: AsyncExitStack) -> BrowserClient:
    url = f"ws://127.0.0.1:{host.port}/ws?token={token}"
    client = BrowserClient(await stack.enter_async_context(open_websocket_url(url)))
    await client.send_json(TEXT_SETUP)
    assert "setupComplete" in await client.recv_json()
    return client


async def turn(client: BrowserClient) -> None:
    await client.send_json({"type": "text", "text": "are you there?"})
    with trio.fail_after(5):
        await client.recv_until(has_key("serverContent", "turnComplete"))


def issues(host: Served) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await auth(host)).status == 200

    return check


def logged(hosts: tuple[Served, ...], text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all(text in host.text for host in hosts)

    return check


async def refusal(host: Served) -> str:
    response = await auth(host)
    assert response.status != 200, "a token was issued"
    code: str = response.json()["error"]["code"]
    return code


async def test_a_token_from_one_host_opens_on_the_other_once(redis_server: RedisServer) -> None:
    async with two_hosts(redis_server) as (a, b), AsyncExitStack() as stack:
        token = await mint(a)
        await turn(await open_session(b, token, stack))
        for host in (a, b):
            async with open_websocket_url(f"ws://127.0.0.1:{host.port}/ws?token={token}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 4003


async def test_max_sessions_holds_across_hosts(redis_server: RedisServer) -> None:
    async with two_hosts(redis_server, MAX_SESSIONS="4") as (a, b), AsyncExitStack() as stack:
        live = [await open_session(a, await mint(b), stack) for _ in range(2)]
        await mint(b)  # an unused token holds a place too
        await mint(a)
        assert await refusal(a) == "at_capacity"
        assert await refusal(b) == "at_capacity"
        ready = await request("127.0.0.1", b.port, "GET", "/api/ready")
        assert (ready.status, ready.json()["error"]["message"]) == (503, "at capacity")
        await live[0].ws.aclose()
        await eventually(issues(b), 5)  # the closed session's place comes back at once


async def test_a_killed_hosts_places_return_within_the_lease(redis_server: RedisServer) -> None:
    async with two_hosts(redis_server, MAX_SESSIONS="3") as (a, b), AsyncExitStack() as stack:
        survivor = await open_session(b, await mint(a), stack)
        for _ in range(2):
            await open_session(a, await mint(a), stack)
        assert await refusal(b) == "at_capacity"
        a.process.kill()
        issued = 0

        async def both_back() -> bool:  # each lease runs out on its own schedule
            nonlocal issued
            issued += (await auth(b)).status == 200
            return issued == 2

        waited = await eventually(both_back, LEASE + 3)
        assert waited >= LEASE * 0.5  # held until the leases ran out
        assert await refusal(b) == "at_capacity"  # and the survivor's lease still holds
        await turn(survivor)


async def test_redis_stopped_and_restarted_mid_test(redis_server: RedisServer) -> None:
    async with two_hosts(redis_server, MAX_SESSIONS="3") as (a, b), AsyncExitStack() as stack:
        sessions = [await open_session(a, await mint(b), stack)]
        sessions.append(await open_session(b, await mint(a), stack))
        spare = await mint(a)
        redis_server.stop()
        for host in (a, b):
            answer = await auth(host)
            assert (answer.status, answer.json()["error"]["code"]) == (503, "state_unavailable")
            ready = await request("127.0.0.1", host.port, "GET", "/api/ready")
            assert ready.json()["error"]["message"] == "state store unreachable"
        async with open_websocket_url(f"ws://127.0.0.1:{b.port}/ws?token={spare}") as ws:
            client = BrowserClient(ws)
            ended = await client.wait_closed()
        assert (ended.last_event["error"]["code"], ended.code) == ("state_unavailable", 1013)
        for session in sessions:  # live sessions go on
            await turn(session)
        await eventually(logged((a, b), "session leases not renewed"), LEASE * 2)

        redis_server.start()  # empty: every token and lease is gone
        # Both hosts renew their live sessions' leases again.
        await eventually(logged((a, b), "state store reachable again"), LEASE + 3)
        await mint(a)  # of 3 places, the 2 live sessions hold 2 again: one is left
        assert await refusal(b) == "at_capacity"
        for session in sessions:
            await turn(session)
        for host in (a, b):
            host.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await host.process.wait() == 0
            assert "Traceback" not in host.text
