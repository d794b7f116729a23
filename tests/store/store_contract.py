"""What every state store must do, whatever serves it: one suite, run against each store.

A test module subclasses :class:`StoreContract` and implements :meth:`StoreContract.open`.
Stores run on a :class:`FakeClock` the tests move by hand (it starts at the wall clock, so a
store that also sets real expiries for garbage collection keeps its keys for the test).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from liveproxy.core.budget import Charge, Charged
from liveproxy.store import (
    Conversation,
    Grant,
    Lease,
    Limits,
    Rate,
    Refused,
    StateStore,
    Usage,
)

ROOMY = Limits(token_ttl=30, max_sessions=1000)
LEASE_SECONDS = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def issue(
    store: StateStore,
    limits: Limits = ROOMY,
    client: str = "a",
    origin: str | None = None,
    rate: Rate | None = None,
) -> str:
    """A sign-in that must succeed: the client's bucket (with ``rate``), then the token."""
    if rate is not None:
        assert await store.take_sign_in(client, rate) == 0.0
    token = await store.admit(Grant(90, origin=origin, client=client), limits)
    assert isinstance(token, str), token
    return token


class StoreContract:
    """The behaviour every :class:`StateStore` shares."""

    def open(
        self, clock: Callable[[], float], lease_seconds: float
    ) -> AbstractAsyncContextManager[StateStore]:
        raise NotImplementedError

    async def test_a_token_is_spent_by_its_first_use(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            token = await issue(store, origin="https://app.example")
            lease = await store.start_session(token, "s1")
            assert lease == Lease("s1", Grant(90, origin="https://app.example", client="a"))
            assert await store.start_session(token, "s2") is None
            assert await store.start_session(None, "s3") is None
            assert await store.start_session("unknown", "s4") is None
            assert await store.usage() == Usage(tokens=0, sessions=1)

    async def test_tokens_expire_after_the_ttl(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            old = await issue(store)
            clock.now += 29.9
            fresh = await issue(store)
            clock.now += 0.1
            assert await store.usage() == Usage(tokens=1, sessions=0)
            assert await store.start_session(old, "s1") is None
            assert await store.start_session(fresh, "s2") is not None

    async def test_capacity_counts_tokens_and_leases(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            limits = Limits(token_ttl=30, max_sessions=2)
            lease = await store.start_session(await issue(store, limits, client="b"), "s1")
            assert lease is not None
            await issue(store, limits)
            refused = await store.admit(Grant(90, client="c"), limits)
            assert refused == Refused(503, "at_capacity", "at capacity (2 sessions)")
            await store.end_session(lease)
            await issue(store, limits)

    async def test_a_lease_not_renewed_gives_its_place_back(self) -> None:
        clock = FakeClock()
        async with self.open(clock, 10.0) as store:
            limits = Limits(token_ttl=30, max_sessions=2)
            kept = await store.start_session(await issue(store, limits), "kept")
            lost = await store.start_session(await issue(store, limits), "lost")
            assert kept is not None
            assert lost is not None
            assert isinstance(await store.admit(Grant(90), limits), Refused)
            for _ in range(3):
                clock.now += 6
                await store.renew([kept])
            assert await store.usage() == Usage(tokens=0, sessions=1)
            await issue(store, limits)
            assert isinstance(await store.admit(Grant(90), limits), Refused)

    async def test_renewing_recreates_a_lease_the_store_lost(self) -> None:
        clock = FakeClock()
        async with self.open(clock, 10.0) as store:
            lease = await store.start_session(await issue(store), "s1")
            assert lease is not None
            clock.now += 11  # as if the store had been down past the lease time
            assert await store.usage() == Usage(tokens=0, sessions=0)
            await store.renew([lease])
            assert await store.usage() == Usage(tokens=0, sessions=1)
            await store.end_session(lease)
            await store.end_session(lease)  # twice is harmless
            assert await store.usage() == Usage(tokens=0, sessions=0)

    async def test_the_rate_limit_is_a_bucket_per_client(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            rate = Rate(3, 60.0)
            for _ in range(3):
                assert await store.take_sign_in("a", rate) == 0.0
            assert await store.take_sign_in("a", rate) == pytest.approx(20.0)
            assert await store.take_sign_in("other", rate) == 0.0  # not held back
            clock.now += 20
            assert await store.take_sign_in("a", rate) == 0.0
            assert await store.take_sign_in("a", rate) > 0
            assert await store.take_sign_in("a", rate) == pytest.approx(20.0)  # waiting is free

    async def test_the_per_client_cap_counts_tokens_and_leases_with_a_retry_after(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            limits = Limits(token_ttl=30, max_sessions=1000, per_client=2)
            lease = await store.start_session(await issue(store, limits), "s1")
            assert lease is not None
            await issue(store, limits)
            clock.now += 10
            refused = await store.admit(Grant(90, client="a"), limits)
            assert isinstance(refused, Refused)
            assert (refused.status, refused.code, refused.retry_after) == (
                429,
                "too_many_sessions",
                20,
            )
            await issue(store, limits, client="b")
            clock.now += 20  # the token expired: room again
            await issue(store, limits)
            await store.end_session(lease)
            await issue(store, limits)

    async def test_concurrent_spends_of_one_token_succeed_once(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            token = await issue(store)
            won: list[Lease] = []

            async def spend(n: int) -> None:
                lease = await store.start_session(token, f"s{n}")
                if lease is not None:
                    won.append(lease)

            async with trio.open_nursery() as nursery:
                for n in range(100):
                    nursery.start_soon(spend, n)
            assert len(won) == 1
            assert await store.usage() == Usage(tokens=0, sessions=1)

    async def test_concurrent_admissions_never_exceed_capacity(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            limits = Limits(token_ttl=30, max_sessions=10)
            issued: list[str] = []

            async def ask(n: int) -> None:
                answer = await store.admit(Grant(90, client=f"c{n}"), limits)
                if isinstance(answer, str):
                    issued.append(answer)

            async with trio.open_nursery() as nursery:
                for n in range(50):
                    nursery.start_soon(ask, n)
            assert len(issued) == 10
            assert await store.usage() == Usage(tokens=10, sessions=0)

    async def test_a_resumed_grant_keeps_its_state_through_the_token(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            state = '{"handle": "h-1", "replay": ["\\u00e9t\u00e9"]}'
            grant = Grant(42, origin="https://app.example", client="a", resume=state)
            token = await store.admit(grant, ROOMY)
            assert isinstance(token, str)
            lease = await store.start_session(token, "s1")
            assert lease is not None
            assert lease.grant == grant

    async def test_an_ephemeral_grant_keeps_its_constraints_through_the_token(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            constraints = '{"model": "m", "config": {"t\u00e9": 1}, "lock": [], "uses": 1}'
            grant = Grant(42, origin="https://app.example", client="a", ephemeral=constraints)
            token = await store.admit(grant, ROOMY)
            assert isinstance(token, str)
            lease = await store.start_session(token, "s1")
            assert lease is not None
            assert lease.grant == grant
            assert await store.start_session(token, "s2") is None  # one use

    async def test_a_signed_in_grant_keeps_its_claims_through_the_token(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            claims = '{"sub": "user-7", "plan": "pro", "n\u00e4me": "J\u00fcrgen"}'
            grant = Grant(60, origin=None, client="sub:abc", claims=claims)
            token = await store.admit(grant, ROOMY)
            assert isinstance(token, str)
            lease = await store.start_session(token, "s1")
            assert lease is not None
            assert lease.grant == grant

    async def test_a_conversation_is_taken_back_once_by_its_origin_and_client(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            kept = Conversation("https://app.example", "a", '{"turns": 3}')
            await store.keep_conversation("resume-1", kept, 60)
            assert await store.take_conversation("resume-1", "https://evil.example", "a") is None
            assert await store.take_conversation("resume-1", "https://app.example", "b") is None
            assert await store.take_conversation("resume-1", None, "a") is None
            taken = await store.take_conversation("resume-1", "https://app.example", "a")
            assert taken == kept
            assert await store.take_conversation("resume-1", "https://app.example", "a") is None
            assert await store.take_conversation("unknown", "https://app.example", "a") is None
            no_origin = Conversation(None, "a", "{}")
            await store.keep_conversation("resume-2", no_origin, 60)
            assert await store.take_conversation("resume-2", None, "a") == no_origin

    async def test_a_conversation_expires_after_the_window(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            kept = Conversation(None, "a", "{}")
            await store.keep_conversation("old", kept, 60)
            clock.now += 59.9
            await store.keep_conversation("fresh", kept, 60)
            clock.now += 0.1
            assert await store.take_conversation("old", None, "a") is None
            assert await store.take_conversation("fresh", None, "a") == kept

    async def test_a_returned_conversation_keeps_its_expiry(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            kept = Conversation(None, "a", '{"handle": "h"}')
            await store.keep_conversation("r", kept, 60)
            clock.now += 40
            taken = await store.take_conversation("r", None, "a")
            assert taken == kept
            assert taken.expires_at == pytest.approx(clock.now + 20)
            await store.return_conversation("r", taken)  # a refused resume: still 20 s left
            clock.now += 19.9
            again = await store.take_conversation("r", None, "a")
            assert again == kept
            await store.return_conversation("r", again)
            clock.now += 0.1
            assert await store.take_conversation("r", None, "a") is None  # not a fresh window
            await store.return_conversation("r", again)  # past its expiry: not kept
            assert await store.take_conversation("r", None, "a") is None

    async def test_concurrent_takes_of_one_conversation_succeed_once(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            await store.keep_conversation("r", Conversation(None, "a", "{}"), 60)
            won: list[Conversation] = []

            async def take() -> None:
                taken = await store.take_conversation("r", None, "a")
                if taken is not None:
                    won.append(taken)

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(take)
            assert len(won) == 1

    async def test_a_budget_counter_grants_within_its_limit_and_settles(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            assert await store.charge([Charge("c:a|tokens|d", 0, 40, 100, 60)]) == [Charged(40, 40)]
            reserve = Charge("c:a|tokens|d", 0, 80, 100, 60)
            assert await store.charge([reserve]) == [Charged(60, 100)]  # only what is left
            assert await store.charge([reserve]) == [Charged(0, 100)]
            # Use past the limit is added all the same; an unused hold is given back.
            used = [Charge("c:a|tokens|d", 7, 0, 100, 60), Charge("t|tokens|d", -5, 0, 10, 60)]
            assert await store.charge(used) == [Charged(0, 107), Charged(0, 0)]
            assert await store.charge([Charge("c:a|tokens|d", -50, 0, 100, 60)]) == [Charged(0, 57)]
            assert await store.charge([Charge("other", 0, 0, 100, 60)]) == [Charged(0, 0)]

    async def test_reading_a_budget_counter_keeps_nothing(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            assert await store.charge([Charge("k", 0, 0, 100, 3600)]) == [Charged(0, 0)]
            await store.charge([Charge("j", 5, 0, 100, 10)])
            assert await store.charge([Charge("j", 0, 0, 100, 3600)]) == [Charged(0, 5)]
            clock.now += 10.5  # a read did not extend it
            assert await store.charge([Charge("j", 0, 0, 100, 3600)]) == [Charged(0, 0)]

    async def test_a_budget_counter_goes_after_its_ttl(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            await store.charge([Charge("k", 30, 0, 100, 10)])
            clock.now += 9
            assert await store.charge([Charge("k", 0, 0, 100, 10)]) == [Charged(0, 30)]
            clock.now += 10.5
            assert await store.charge([Charge("k", 0, 0, 100, 10)]) == [Charged(0, 0)]

    async def test_concurrent_reservations_never_pass_the_limit(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            granted: list[float] = []

            async def reserve() -> None:
                (charged,) = await store.charge([Charge("k", 0, 7, 100, 60)])
                granted.append(charged.granted)

            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(reserve)
            assert sum(granted) == 100
            assert sorted(granted, reverse=True)[:16] == [7] * 14 + [2, 0]
