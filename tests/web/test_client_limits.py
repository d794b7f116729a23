"""Per-client limits on real sockets: the sign-in rate, the session cap, X-Forwarded-For.

Clients are told apart by their address: requests from 127.0.0.2 are another client than those
from 127.0.0.1 (Linux routes all of 127/8 to loopback).
"""

from __future__ import annotations

import math

import pytest
import trio

from liveproxy.config import Config
from liveproxy.web.clients import client_ip
from tests.conftest import Proxy, ProxyFactory
from tests.http import HttpResponse, request


async def auth(
    proxy: Proxy, *, source: str = "127.0.0.1", forwarded: str | None = None
) -> HttpResponse:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return await request(
        "127.0.0.1", proxy.port, "POST", "/api/auth", b"", headers, local_address=source
    )


async def burst(proxy: Proxy, count: int, **kw: str) -> list[int]:
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await auth(proxy, **kw)).status)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return statuses


async def test_400_concurrent_sign_ins_from_one_client_get_at_most_the_burst(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(max_sessions=10_000, max_sessions_per_client=0)
    flood, neighbour = [], []
    started = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def run_flood() -> None:
            flood.extend(await burst(proxy, 400))

        async def run_neighbour() -> None:
            neighbour.extend(await burst(proxy, 20, source="127.0.0.2"))

        nursery.start_soon(run_flood)
        nursery.start_soon(run_neighbour)
    # The burst of 30, plus what the bucket refilled (30 a minute) while the flood ran.
    refilled = math.ceil((trio.current_time() - started) * 30 / 60)
    assert flood.count(200) <= 30 + refilled
    assert flood.count(200) + flood.count(429) == 400
    assert neighbour == [200] * 20


async def test_over_the_rate_is_429_with_retry_after_and_it_refills(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(auth_rate_limit=(2, 60.0), max_sessions_per_client=0)
    assert [(await auth(proxy)).status for _ in range(2)] == [200, 200]
    refused = await auth(proxy)
    assert refused.status == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "30"
    await trio.sleep(30)
    assert (await auth(proxy)).status == 200


async def test_the_per_client_cap_counts_unused_tokens_with_retry_after(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(max_sessions_per_client=3, auth_rate_limit=None)
    assert [(await auth(proxy)).status for _ in range(3)] == [200, 200, 200]
    refused = await auth(proxy)
    assert refused.status == 429
    assert refused.json()["error"]["code"] == "too_many_sessions"
    assert refused.headers["retry-after"] == "30"
    assert (await auth(proxy, source="127.0.0.2")).status == 200
    await trio.sleep(30)  # the tokens expire and stop counting
    assert (await auth(proxy)).status == 200


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(auth_rate_limit=(3, 60.0), max_sessions_per_client=0)
    statuses = [(await auth(proxy, forwarded=f"203.0.113.{n}")).status for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_a_trusted_proxys_forwarded_for_names_the_client(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(
        auth_rate_limit=(3, 60.0),
        max_sessions_per_client=0,
        trusted_proxies=Config.from_env({"TRUSTED_PROXIES": "127.0.0.1/32"}).trusted_proxies,
    )
    statuses = [(await auth(proxy, forwarded=f"203.0.113.{n}")).status for n in range(5)]
    assert statuses == [200] * 5
    same = [(await auth(proxy, forwarded="198.51.100.7, 127.0.0.1")).status for _ in range(4)]
    assert same == [200, 200, 200, 429]


NETS = Config.from_env({"TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.1", ["203.0.113.9"], "198.51.100.1"),  # untrusted peer: header ignored
        ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("127.0.0.1", ["1.1.1.1, 203.0.113.9, 10.1.2.3"], "203.0.113.9"),  # right-most untrusted
        ("127.0.0.1", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),  # several headers, in order
        ("127.0.0.1", ["10.0.0.2, 10.0.0.1"], "10.0.0.2"),  # only proxies: the farthest
        ("127.0.0.1", ["garbage, 10.0.0.1"], "10.0.0.1"),  # a bad hop ends the walk
        ("127.0.0.1", [], "127.0.0.1"),
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_client_ip(peer: str | None, forwarded: list[str], client: str) -> None:
    assert client_ip(peer, forwarded, NETS) == client
