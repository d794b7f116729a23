"""The in-memory state store: single-use tokens, expiry, per-client limits, bounded memory.

Its methods are async (the interface Redis will serve) but never wait, so each test runs them
under trio with a clock of its own.
"""

from __future__ import annotations

from liveproxy.web.store import Grant, Limits, MemoryStore, Rate, Refused, token_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ROOMY = Limits(token_ttl=30, max_sessions=1000)


async def issue(store: MemoryStore, limits: Limits = ROOMY, client: str = "a") -> str:
    token = await store.admit(Grant(90, client=client), limits)
    assert isinstance(token, str), token
    return token


async def test_a_token_is_spent_by_its_first_use() -> None:
    store = MemoryStore(FakeClock())
    token = await issue(store)
    assert await store.consume(token) == Grant(90, client="a")
    assert await store.consume(token) is None
    assert await store.consume(None) is None
    assert await store.consume("unknown") is None


async def test_the_store_keeps_a_hash_not_the_token() -> None:
    store = MemoryStore(FakeClock())
    token = await issue(store)
    assert token not in store._tokens
    assert token_key(token) in store._tokens


async def test_tokens_expire_after_the_ttl_and_are_pruned() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    old = await issue(store)
    clock.now += 29.9
    fresh = await issue(store)
    clock.now += 0.1
    assert await store.consume(old) is None
    assert store.valid_tokens() == 1
    assert await store.consume(fresh) is not None
    assert store.valid_tokens() == 0


async def test_capacity_counts_tokens_and_live_sessions() -> None:
    store = MemoryStore(FakeClock())
    limits = Limits(token_ttl=30, max_sessions=2)
    await store.session_started("b")
    await issue(store, limits)
    refused = await store.admit(Grant(90, client="c"), limits)
    assert refused == Refused(503, "at_capacity", "at capacity (2 sessions)")
    await store.session_ended("b")
    await issue(store, limits)


async def test_the_rate_limit_is_a_bucket_per_client() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    limits = Limits(token_ttl=30, max_sessions=1000, rate=Rate(3, 60.0))
    for _ in range(3):
        await issue(store, limits)
    refused = await store.admit(Grant(90, client="a"), limits)
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code, refused.retry_after) == (429, "rate_limited", 20)
    await issue(store, limits, client="other")  # another client is not held back
    clock.now += 20
    await issue(store, limits)


async def test_idle_buckets_are_dropped_once_they_would_be_full() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    limits = Limits(token_ttl=30, max_sessions=10_000, rate=Rate(3, 60.0))
    for n in range(1000):
        await issue(store, limits, client=f"10.0.{n // 250}.{n % 250}")
    assert len(store._buckets) == 1000
    clock.now += 61
    await issue(store, limits, client="late")
    assert list(store._buckets) == ["late"]


async def test_the_per_client_cap_counts_tokens_and_sessions_with_a_retry_after() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    limits = Limits(token_ttl=30, max_sessions=1000, per_client=2)
    await store.session_started("a")
    await issue(store, limits)
    clock.now += 10
    refused = await store.admit(Grant(90, client="a"), limits)
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code, refused.retry_after) == (429, "too_many_sessions", 20)
    await issue(store, limits, client="b")
    clock.now += 20  # the token expired: room again
    await issue(store, limits)
