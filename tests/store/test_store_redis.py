"""The Redis store against a private redis-server: the shared contract, plus what only Redis
shows (hashed keys, several hosts, outages and restarts, real TTLs, pruning)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import coredis
import orjson
import pytest
import trio

from liveproxy.store import (
    Conversation,
    Grant,
    Lease,
    Limits,
    Rate,
    Refused,
    StoreUnavailable,
    Usage,
    token_key,
)
from liveproxy.store.redis import DEFAULT_PREFIX, TTL_MARGIN, RedisStore, open_redis_store
from tests.redis_server import RedisServer
from tests.store.store_contract import LEASE_SECONDS, ROOMY, FakeClock, StoreContract, issue

PREFIX = DEFAULT_PREFIX
#: A call against a Redis that is down or hung must give up within this (it takes about 1 s).
BOUND = 5.0


class TestRedisStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.server = redis_server

    @asynccontextmanager
    async def open(
        self, clock: Callable[[], float], lease_seconds: float
    ) -> AsyncIterator[RedisStore]:
        async with open_redis_store(self.server.url, clock, lease_seconds) as store:
            yield store


@asynccontextmanager
async def raw_client(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(server.url, decode_responses=False) as client:
        yield client


async def dump(client: coredis.Redis[bytes]) -> dict[bytes, Any]:
    """Every key and what it holds, whatever its type."""
    found: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=b"*"):
        kind = await client.type(key)
        if kind == b"string":
            found[key] = await client.get(key)
        elif kind == b"hash":
            found[key] = await client.hgetall(key)
        elif kind == b"zset":
            found[key] = await client.zrange(key, 0, -1, withscores=True)
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}")
    return found


async def test_the_store_keeps_hashes_never_the_token(redis_server: RedisServer) -> None:
    async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
        spent = await issue(store, client="a")
        await store.start_session(spent, "s1")
        kept = await issue(store, client="b")
        async with raw_client(redis_server) as client:
            everything = repr(await dump(client)).encode()
    assert everything.count(token_key(kept).encode()) >= 2  # the token's hash and its indexes
    for token in (spent, kept):
        assert token.encode() not in everything
    assert b"s1" in everything


async def test_two_stores_on_one_redis_share_tokens_and_capacity(
    redis_server: RedisServer,
) -> None:
    limits = Limits(token_ttl=30, max_sessions=3)
    clock = FakeClock()
    async with (
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_a,
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_b,
    ):
        token = await issue(host_a, limits, origin="https://app.example")
        lease = await host_b.start_session(token, "s1")
        assert lease == Lease("s1", Grant(90, origin="https://app.example", client="a"))
        assert await host_a.start_session(token, "s2") is None
        await issue(host_b, limits, client="b")
        await issue(host_a, limits, client="c")
        assert await host_b.admit(Grant(90, client="d"), limits) == Refused(
            503, "at_capacity", "at capacity (3 sessions)"
        )
        await host_a.end_session(lease)
        assert await host_b.usage() == Usage(tokens=2, sessions=0)

        issued: list[str] = []

        async def ask(store: RedisStore, n: int) -> None:
            answer = await store.admit(Grant(90, client=f"c{n}"), Limits(30, max_sessions=12))
            if isinstance(answer, str):
                issued.append(answer)

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(ask, host_a if n % 2 else host_b, n)
        assert len(issued) == 10
        assert await host_a.usage() == Usage(tokens=12, sessions=0)


async def test_two_stores_racing_on_a_tokens_last_uses_spend_each_once(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    grant = Grant(90, client="a", ephemeral="{}", uses=3)
    async with (
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_a,
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_b,
    ):
        for _ in range(10):
            token = await host_a.admit(grant, ROOMY)
            assert isinstance(token, str)
            leases: list[Lease] = []

            async def spend(
                store: RedisStore, n: int, token: str = token, leases: list[Lease] = leases
            ) -> None:
                answer = await store.start_native(token, f"s{n}", ROOMY)
                if answer is not None:
                    assert isinstance(answer, Lease)
                    leases.append(answer)

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(spend, host_a if n % 2 else host_b, n)
            assert len(leases) == 3
            for lease in leases:
                await host_a.end_session(lease)
        assert await host_b.usage() == Usage(tokens=0, sessions=0)


async def test_an_older_releases_ephemeral_token_is_one_use(redis_server: RedisServer) -> None:
    clock = FakeClock()
    async with (
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as store,
        raw_client(redis_server) as client,
    ):
        old = {"session_time_limit": 90, "client": "a", "ephemeral": "{}"}  # no "uses"
        for token, grant in (("old", orjson.dumps(old)), ("garbled", b"{not json")):
            key = token_key(token)
            await client.hset(f"{PREFIX}t:{key}".encode(), {b"grant": grant, b"client": b"a"})
            await client.zadd(f"{PREFIX}tokens".encode(), {key.encode(): clock.now + 30})
        assert isinstance(await store.start_native("old", "s1", ROOMY), Lease)
        assert await store.start_native("old", "s2", ROOMY) is None
        assert await store.start_native("old", "r", ROOMY, resuming=True) is not None
        assert await store.start_native("garbled", "s3", ROOMY) is None
        assert await store.ephemeral_grant("garbled") is None


async def every_call_fails_in_time(store: RedisStore) -> None:
    """Each of the store's methods raises StoreUnavailable within :data:`BOUND` seconds."""
    lease = Lease("s1", Grant(90, client="a"))
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.admit(Grant(90), ROOMY),
        lambda: store.start_session("a-token", "s2"),
        lambda: store.start_native("a-token", "s2", ROOMY),
        lambda: store.ephemeral_grant("a-token"),
        lambda: store.renew([lease]),
        lambda: store.end_session(lease),
        store.usage,
        lambda: store.keep_conversation("a-token", Conversation(None, "a", "{}"), 60),
        lambda: store.take_conversation("a-token", None, "a"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await call()
        assert time.monotonic() - started < BOUND
        assert "a-token" not in str(raised.value)


async def test_a_redis_that_is_down_fails_every_call_quickly(redis_server: RedisServer) -> None:
    async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
        await issue(store)
        redis_server.stop()
        await every_call_fails_in_time(store)


async def test_a_redis_that_hangs_fails_every_call_in_time_then_recovers(
    redis_server: RedisServer,
) -> None:
    async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
        token = await issue(store)
        redis_server.pause()
        started = trio.current_time()
        await every_call_fails_in_time(store)
        assert trio.current_time() - started < 5 * BOUND
        redis_server.resume()
        # A call sent before the hang may yet run (its reply lost): only what the test did counts.
        assert await store.start_session(token, "s9") is not None
        assert (await store.usage()).sessions >= 1


class FreezingProxy:
    """A TCP relay to Redis whose open connections can be frozen: they stay open but carry
    nothing more (a connection dead without a close, as behind a NAT that forgot it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = trio.Event()

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        frozen = self.frozen.is_set()
        async with client, await trio.open_tcp_stream("127.0.0.1", self.port) as server:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                async for data in source:
                    if frozen is False and self.frozen.is_set():
                        await trio.sleep_forever()
                    await sink.send_all(data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)


async def test_a_connection_that_died_silently_is_replaced(redis_server: RedisServer) -> None:
    proxy = FreezingProxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        url = f"redis://127.0.0.1:{port}/0"
        async with open_redis_store(url, FakeClock(), LEASE_SECONDS, io_timeout=0.5) as store:
            token = await issue(store)
            proxy.frozen.set()  # the store's connection now goes nowhere; new ones still work
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.usage()
            assert time.monotonic() - started < BOUND
            assert await store.start_session(token, "s1") is not None
            assert await store.usage() == Usage(tokens=0, sessions=1)
        nursery.cancel_scope.cancel()


async def test_a_restarted_redis_is_used_again_and_renewals_restore_the_leases(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with open_redis_store(redis_server.url, clock, 10.0) as store:
        lease = await store.start_session(await issue(store), "s1")
        assert lease is not None
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.renew([lease])
        redis_server.start()  # empty: no keys, no scripts loaded
        assert await store.usage() == Usage(tokens=0, sessions=0)
        await store.renew([lease])
        token = await issue(store, Limits(token_ttl=30, max_sessions=2))
        assert await store.usage() == Usage(tokens=1, sessions=1)
        assert isinstance(
            await store.admit(Grant(90), Limits(token_ttl=30, max_sessions=2)), Refused
        )
        assert await store.start_session(token, "s2") is not None


async def test_a_store_opened_while_redis_is_down_works_once_it_is_up(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    with trio.fail_after(BOUND):
        async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
            with pytest.raises(StoreUnavailable):
                await store.usage()
            redis_server.start()
            token = await issue(store)
            assert await store.start_session(token, "s1") is not None


async def test_a_password_in_the_url_is_never_in_an_error(redis_server: RedisServer) -> None:
    async with raw_client(redis_server) as client:
        await client.config_set({"requirepass": "the-real-one"})
    url = redis_server.url.replace("redis://", "redis://:hunter2-secret@")
    async with open_redis_store(url, FakeClock(), LEASE_SECONDS) as store:
        with pytest.raises(StoreUnavailable) as refused:  # the wrong password
            await store.usage()
        redis_server.stop()
        with pytest.raises(StoreUnavailable) as down:
            await store.usage()
    for raised in (refused, down):
        assert "hunter2" not in str(raised.value)
        assert "hunter2" not in repr(raised.value.__cause__)


async def test_every_key_gets_a_real_ttl(redis_server: RedisServer) -> None:
    clock = FakeClock()
    limits = Limits(token_ttl=30, max_sessions=100, per_client=5)
    rate = Rate(10, 60.0)
    async with open_redis_store(redis_server.url, clock, 10.0) as store:
        lease = await store.start_session(await issue(store, limits, rate=rate), "s1")
        assert lease is not None
        kept = await issue(store, limits, client="b", rate=rate)
        await store.renew([lease, Lease("s2", Grant(90, client="c"))])
        await store.end_session(Lease("s3", Grant(90, client="d")))
        assert await store.usage() == Usage(tokens=1, sessions=2)
        async with raw_client(redis_server) as client:
            keys = sorted([key async for key in client.scan_iter(match=b"*")])
            names = ["tokens", "ct:b", f"t:{token_key(kept)}", "leases", "lc", "cl:a", "cl:c"]
            assert keys == sorted(f"{PREFIX}{name}".encode() for name in [*names, "b:a", "b:b"])
            for key in keys:
                ttl = await client.pttl(key)
                assert 0 < ttl <= (60 + TTL_MARGIN) * 1000, (key, ttl)


async def test_a_spent_ephemeral_token_is_kept_until_expire_time_by_a_real_ttl(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with open_redis_store(redis_server.url, clock, LEASE_SECONDS) as store:
        token = await store.admit(Grant(90, client="a", ephemeral="{}"), ROOMY)
        assert isinstance(token, str)
        assert isinstance(await store.start_native(token, "s1", ROOMY), Lease)
        async with raw_client(redis_server) as client:
            key = f"{PREFIX}s:{token_key(token)}".encode()
            assert await client.exists([f"{PREFIX}t:{token_key(token)}".encode()]) == 0
            ttl = await client.pttl(key)
            # until the TTL (30 s) plus the session's limit (90 s), and the margin
            assert (120 + TTL_MARGIN - 5) * 1000 < ttl <= (120 + TTL_MARGIN) * 1000


async def test_expired_tokens_and_leases_are_pruned_from_redis(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with open_redis_store(redis_server.url, clock, 10.0) as store:
        for n in range(5):
            await store.start_session(await issue(store, client=f"c{n}"), f"s{n}")
            await issue(store, client=f"c{n}")
        async with raw_client(redis_server) as client:
            assert await client.zcard(f"{PREFIX}tokens") == 5
            assert await client.zcard(f"{PREFIX}leases") == 5
            assert len([k async for k in client.scan_iter(match=b"*")]) == 2 + 5 + 1 + 5 + 5
            clock.now += 31
            late = await issue(store, client="late")
            assert await client.zcard(f"{PREFIX}tokens") == 1
            keys = sorted([k async for k in client.scan_iter(match=b"*")])
            assert keys == sorted(
                f"{PREFIX}{name}".encode() for name in ["tokens", "ct:late", f"t:{token_key(late)}"]
            )


async def test_two_stores_on_one_redis_share_conversations_taken_once(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    async with (
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_a,
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as host_b,
    ):
        resumed = Grant(42, origin="https://app.example", client="a", resume='{"turns": 2}')
        token = await host_a.admit(resumed, ROOMY)
        assert isinstance(token, str)
        assert await host_b.start_session(token, "s1") == Lease("s1", resumed)

        kept = Conversation("https://app.example", "a", '{"handle": "h-1"}')
        await host_a.keep_conversation("resume-1", kept, 60)
        assert await host_b.take_conversation("resume-1", "https://evil.example", "a") is None
        assert await host_b.take_conversation("resume-1", "https://app.example", "") is None
        assert await host_b.take_conversation("resume-1", None, "a") is None
        won: list[tuple[str, Conversation]] = []

        async def take(name: str, store: RedisStore) -> None:
            taken = await store.take_conversation("resume-1", "https://app.example", "a")
            if taken is not None:
                won.append((name, taken))

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(take, *(("a", host_a) if n % 2 else ("b", host_b)))
        assert [taken for _, taken in won] == [kept]
        assert await host_a.take_conversation("resume-1", "https://app.example", "a") is None

        # Many conversations, each raced for by both hosts: every one is taken once.
        for n in range(40):
            await host_b.keep_conversation(f"r{n}", Conversation(None, f"c{n}", str(n)), 60)
        taken_by: dict[int, list[str]] = {n: [] for n in range(40)}

        async def take_all(name: str, store: RedisStore) -> None:
            for n in range(40):
                if await store.take_conversation(f"r{n}", None, f"c{n}") is not None:
                    taken_by[n].append(name)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(take_all, "a", host_a)
                nursery.start_soon(take_all, "b", host_b)
        assert all(len(names) == 1 for names in taken_by.values()), taken_by
        async with raw_client(redis_server) as client:
            assert [key async for key in client.scan_iter(match=f"{PREFIX}c:*".encode())] == []


async def test_a_kept_conversation_has_a_real_ttl(redis_server: RedisServer) -> None:
    clock = FakeClock()
    key = f"{PREFIX}c:{token_key('resume-1')}"
    async with (
        open_redis_store(redis_server.url, clock, LEASE_SECONDS) as store,
        raw_client(redis_server) as client,
    ):
        await store.keep_conversation("resume-1", Conversation(None, "a", "{}"), 60)
        assert 60_000 < await client.pttl(key) <= (60 + TTL_MARGIN) * 1000
        await store.keep_conversation("resume-1", Conversation(None, "a", "{}"), 5)
        assert 5_000 < await client.pttl(key) <= (5 + TTL_MARGIN) * 1000  # shortened too
        assert await store.take_conversation("resume-1", None, "a") is not None
        assert await client.exists([key]) == 0
        # Past its window a conversation is gone, and deleted by the take that finds it so,
        # whoever asks; one merely kept for someone else stays.
        await store.keep_conversation("resume-1", Conversation(None, "a", "{}"), 60)
        await store.keep_conversation("resume-2", Conversation(None, "a", "{}"), 600)
        clock.now += 60
        assert await store.take_conversation("resume-1", "https://evil.example", "b") is None
        assert await client.exists([key]) == 0
        assert await store.take_conversation("resume-2", None, "b") is None
        assert await client.exists([f"{PREFIX}c:{token_key('resume-2')}"]) == 1


async def test_the_resume_token_never_appears_in_redis(redis_server: RedisServer) -> None:
    resume_token = "the-resume-token-kN3q8"
    taken_token = "the-taken-resume-token-Zr7"
    async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
        kept = Conversation("https://app.example", "a", '{"handle": "h-7"}')
        await store.keep_conversation(resume_token, kept, 60)
        await store.keep_conversation(taken_token, kept, 60)
        assert await store.take_conversation(taken_token, "https://app.example", "a") == kept
        await store.admit(Grant(90, client="a", resume='{"handle": "h-8"}'), ROOMY)
        async with raw_client(redis_server) as client:
            everything = repr(await dump(client)).encode()
    assert f"{PREFIX}c:{token_key(resume_token)}".encode() in everything
    assert b"h-7" in everything  # (the search does look at the conversation)
    assert b"h-8" in everything
    for token in (resume_token, taken_token):
        assert token.encode() not in everything
    assert token_key(taken_token).encode() not in everything


async def test_a_large_state_round_trips_exactly(redis_server: RedisServer) -> None:
    # About 1 MiB of JSON text with escapes, backslashes, non-BMP characters and a NUL.
    state = json.dumps({"replay": ['\\é"\u2028😀\x00 ' * 64] * 1024}, ensure_ascii=False)
    assert len(state.encode()) > 1 << 20
    async with open_redis_store(redis_server.url, FakeClock(), LEASE_SECONDS) as store:
        grant = Grant(60, origin="https://app.example", client="a", resume=state)
        token = await store.admit(grant, ROOMY)
        assert isinstance(token, str)
        assert await store.start_session(token, "s1") == Lease("s1", grant)
        await store.keep_conversation("r", Conversation(None, "a", state), 60)
        taken = await store.take_conversation("r", None, "a")
        assert taken is not None
        assert taken.state == state
