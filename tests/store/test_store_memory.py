"""The in-memory store: the shared contract, plus what only memory shows (hashes, pruning)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from liveproxy.store import Limits, Rate, token_key
from liveproxy.store.memory import MemoryStore
from tests.store.store_contract import LEASE_SECONDS, FakeClock, StoreContract, issue


class TestMemoryStore(StoreContract):
    @asynccontextmanager
    async def open(
        self, clock: Callable[[], float], lease_seconds: float
    ) -> AsyncIterator[MemoryStore]:
        yield MemoryStore(clock, lease_seconds)


async def test_the_store_keeps_a_hash_not_the_token() -> None:
    store = MemoryStore(FakeClock(), LEASE_SECONDS)
    token = await issue(store)
    assert token not in store._tokens
    assert token_key(token) in store._tokens


async def test_idle_buckets_are_dropped_once_they_would_be_full() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, LEASE_SECONDS)
    limits = Limits(token_ttl=30, max_sessions=10_000)
    rate = Rate(3, 60.0)
    for n in range(1000):
        await issue(store, limits, client=f"10.0.{n // 250}.{n % 250}", rate=rate)
    assert len(store._buckets) == 1000
    clock.now += 61
    await issue(store, limits, client="late", rate=rate)
    assert list(store._buckets) == ["late"]


async def test_expired_tokens_and_leases_are_pruned_from_memory() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, 10.0)
    await store.start_session(await issue(store), "s1")
    await issue(store)
    clock.now += 31
    await issue(store, client="b")
    assert len(store._tokens) == 1
    assert store._leases == {}
