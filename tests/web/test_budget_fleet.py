"""A budget held across two hosts of two workers each (``liveproxy serve`` with ``WORKERS=2``,
twice) sharing one real ``redis-server``: 20 parallel sessions of one client, each talking until
the budget ends it, overspend by no more than the stated margin (two turns' tokens per
session), and the shared counter ends up exactly what the sessions used."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.http import request
from tests.redis_server import RedisServer
from tests.served import Served
from tests.web.test_redis_fleet import mint, two_hosts

LIMIT = 6000
SESSIONS = 20


async def talk_until_ended(host: Served, token: str) -> tuple[dict[str, Any], list[int]]:
    """Open a session with ``token`` and talk until the proxy ends it: its last event and the
    ``totalTokenCount`` of each report received."""
    url = f"ws://127.0.0.1:{host.port}/ws?token={token}"
    reports: list[int] = []
    last: dict[str, Any] = {}
    code = None
    async with AsyncExitStack() as stack:
        ws = await stack.enter_async_context(open_websocket_url(url))
        await ws.send_message(orjson.dumps(TEXT_SETUP).decode())
        n = 0
        with trio.fail_after(60):
            try:
                while True:
                    n += 1
                    await ws.send_message(
                        orjson.dumps({"type": "text", "text": f"turn {n}"}).decode()
                    )
                    while True:
                        frame = await ws.get_message()
                        if not isinstance(frame, str):
                            continue
                        event = orjson.loads(frame)
                        last = event
                        usage = event.get("usageMetadata")
                        if usage is not None and event.get("serverContent") is not None:
                            reports.append(usage["totalTokenCount"])
                        if event.get("serverContent", {}).get("turnComplete"):
                            break
            except ConnectionClosed as closed:
                code = None if closed.reason is None else closed.reason.code
    assert code == 1000
    return last, reports


async def test_twenty_parallel_sessions_overspend_by_at_most_two_turns_each(
    redis_server: RedisServer, emulator: Emulator
) -> None:
    settings = {
        "BUDGET_PER_CLIENT": f"{LIMIT} tokens/day",
        "UPSTREAM_URL": emulator.url,
        "GOOGLE_API_KEY": "test-key",
        "RESUME_WINDOW_SECONDS": "0",
        "WORKERS": "2",
    }
    async with two_hosts(redis_server, **settings) as (a, b):
        hosts = [a if i % 2 else b for i in range(SESSIONS)]
        tokens = [await mint(host) for host in hosts]  # all signed in before any spends
        ended: list[tuple[dict[str, Any], list[int]]] = []

        async def run(host: Served, token: str) -> None:
            ended.append(await talk_until_ended(host, token))

        async with trio.open_nursery() as nursery:
            for host, token in zip(hosts, tokens, strict=True):
                nursery.start_soon(run, host, token)
        used = [last["sessionEnd"]["stats"]["usage"]["total_tokens"] for last, _ in ended]
        reasons = {last["sessionEnd"]["reason"] for last, _ in ended}
        largest_turn = max(t for _, reports in ended for t in reports)
        assert reasons == {"budget_exhausted"}
        assert LIMIT <= sum(used) <= LIMIT + SESSIONS * 2 * largest_turn
        response = await request("127.0.0.1", a.port, "GET", "/api/usage")
        (line,) = response.json()["budgets"]
        assert line["used"] == sum(used)  # every session settled exactly what it used
        refused = await request("127.0.0.1", b.port, "POST", "/api/auth")
        assert refused.json()["error"]["code"] == "budget_exhausted"
        print(f"used {sum(used)} of {LIMIT}, largest turn {largest_turn}, per session {used}")
