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
    LiveSession,
    Rate,
    Refused,
    StateStore,
    Usage,
    UsageRecord,
    usage_key,
    usage_key_prefix,
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

    # Ephemeral tokens: uses, and resuming without spending one ----------------------------------

    async def test_an_ephemeral_token_starts_as_many_sessions_as_its_uses(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            grant = ephemeral(uses=2)
            token = await issue_grant(store, grant)
            assert await store.start_native(token, "s1", ROOMY) == Lease("s1", grant)
            assert await store.usage() == Usage(tokens=1, sessions=1)  # one use left
            assert await store.start_native(token, "s2", ROOMY) == Lease("s2", grant)
            assert await store.usage() == Usage(tokens=0, sessions=2)
            assert await store.start_native(token, "s3", ROOMY) is None
            assert await store.start_native(None, "s4", ROOMY) is None
            assert await store.start_native("unknown", "s5", ROOMY) is None

    async def test_an_unlimited_token_starts_sessions_until_its_ttl(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            token = await issue_grant(store, ephemeral(uses=0))
            for n in range(5):
                assert isinstance(await store.start_native(token, f"s{n}", ROOMY), Lease)
            assert await store.usage() == Usage(tokens=1, sessions=5)
            clock.now += 30
            assert await store.start_native(token, "late", ROOMY) is None

    async def test_a_resume_spends_no_use_and_outlives_the_ttl_until_expire_time(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            grant = ephemeral(uses=1)
            token = await issue_grant(store, grant)
            # not yet used: it resumes within its TTL all the same, and is left unspent
            assert await store.start_native(token, "r0", ROOMY, resuming=True) == Lease("r0", grant)
            assert await store.start_native(token, "s1", ROOMY) == Lease("s1", grant)
            assert await store.start_native(token, "s2", ROOMY) is None  # its one use is spent
            assert await store.ephemeral_grant(token) == grant  # it still resumes
            assert await store.start_native(token, "r1", ROOMY, resuming=True) == Lease("r1", grant)
            assert await store.start_native(token, "r2", ROOMY, resuming=True) == Lease("r2", grant)
            assert await store.usage() == Usage(tokens=0, sessions=4)  # counted nowhere but leases
            clock.now += 30 + 90 - 0.5  # the TTL, then the session's limit: Google's expireTime
            assert await store.start_native(token, "r3", ROOMY, resuming=True) == Lease("r3", grant)
            clock.now += 0.5
            assert await store.start_native(token, "r4", ROOMY, resuming=True) is None
            assert await store.ephemeral_grant(token) is None

    async def test_an_unspent_token_past_its_ttl_neither_starts_nor_resumes(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            token = await issue_grant(store, ephemeral(uses=3))
            clock.now += 30
            assert await store.ephemeral_grant(token) is None
            assert await store.start_native(token, "r", ROOMY, resuming=True) is None
            assert await store.start_native(token, "s", ROOMY) is None

    async def test_a_session_token_opens_no_native_session(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            token = await issue(store)
            assert await store.ephemeral_grant(token) is None
            assert await store.start_native(token, "s1", ROOMY) is None
            assert await store.start_native(token, "s2", ROOMY, resuming=True) is None
            assert isinstance(await store.start_session(token, "s3"), Lease)  # still unspent

    async def test_each_session_of_a_multi_use_token_needs_a_place(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            limits = Limits(token_ttl=30, max_sessions=4, per_client=3)
            token = await issue_grant(store, ephemeral(uses=0), limits)
            # The token holds a place while it can start sessions: each session takes another.
            assert isinstance(await store.start_native(token, "s1", limits), Lease)
            assert isinstance(await store.start_native(token, "s2", limits), Lease)
            refused = await store.start_native(token, "s3", limits)
            assert isinstance(refused, Refused)
            assert refused.code == "too_many_sessions"
            assert await store.start_native(token, "s3", limits, resuming=True) == refused
            await store.end_session(Lease("s2", ephemeral(uses=0)))
            await issue(store, limits, client="b")
            await issue(store, limits, client="c")  # the last place, taken by someone else
            refused = await store.start_native(token, "s3", limits)
            assert isinstance(refused, Refused)
            assert refused.code == "at_capacity"
            assert await store.usage() == Usage(tokens=3, sessions=1)  # nothing was spent

    async def test_the_last_use_takes_the_tokens_own_place(self) -> None:
        async with self.open(FakeClock(), LEASE_SECONDS) as store:
            limits = Limits(token_ttl=30, max_sessions=2, per_client=1)
            token = await issue_grant(store, ephemeral(uses=1), limits)
            await issue(store, limits, client="b")
            assert isinstance(await store.start_native(token, "s1", limits), Lease)
            assert await store.usage() == Usage(tokens=1, sessions=1)

    # The operator's view: live sessions, marks to end them, usage records.

    async def test_live_sessions_show_their_summaries_until_they_end_or_expire(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            leases = [await store.start_session(await issue(store), f"s{n}") for n in range(3)]
            assert all(leases)
            held = [lease for lease in leases if lease is not None]
            summaries = {lease.id: f'{{"n": "{lease.id}"}}' for lease in held}
            assert await store.renew_sessions(held, summaries) == frozenset()
            assert await store.live_sessions("", 10) == [
                LiveSession(i, summaries[i]) for i in ("s0", "s1", "s2")
            ]
            # Paged by id: the cursor is the last id seen.
            assert [s.id for s in await store.live_sessions("", 2)] == ["s0", "s1"]
            assert [s.id for s in await store.live_sessions("s1", 2)] == ["s2"]
            await store.end_session(held[0])
            assert [s.id for s in await store.live_sessions("", 10)] == ["s1", "s2"]
            clock.now += LEASE_SECONDS - 1
            await store.renew_sessions(held[1:2], summaries)
            clock.now += 2  # s2 was not renewed: gone with its lease
            assert [s.id for s in await store.live_sessions("", 10)] == ["s1"]
            assert await store.usage() == Usage(tokens=0, sessions=1)

    async def test_a_marked_session_is_told_at_its_next_renewal(self) -> None:
        clock = FakeClock()
        async with self.open(clock, LEASE_SECONDS) as store:
            a = await store.start_session(await issue(store), "a")
            b = await store.start_session(await issue(store), "b")
            assert a is not None
            assert b is not None
            await store.renew_sessions([a], {"a": "{}"})
            await store.renew_sessions([b], {"b": "{}"})
            assert await store.mark_session_end("b") is True
            assert await store.mark_session_end("nobody") is False
            # Each worker hears only of its own sessions; the mark stays until the session ends.
            assert await store.renew_sessions([a], {"a": "{}"}) == frozenset()
            assert await store.renew_sessions([b], {"b": "{}"}) == {"b"}
            assert await store.renew_sessions([b], {"b": "{}"}) == {"b"}
            await store.end_session(b)
            assert await store.mark_session_end("b") is False
            clock.now += LEASE_SECONDS + 1  # a expired
            assert await store.mark_session_end("a") is False

    async def test_usage_records_page_by_end_and_client_within_the_retention(self) -> None:
        clock = FakeClock()
        day = 86400.0
        retention = 35 * day
        async with self.open(clock, LEASE_SECONDS) as store:
            start = clock.now
            kept = []
            for n in range(5):
                client = "alice" if n % 2 == 0 else "bob"
                record = UsageRecord(usage_key(start + n, f"s{n}"), client, f'{{"n": {n}}}')
                await store.keep_usage(record, retention)
                kept.append(record)
            assert await store.usage_records(None, "", 10, retention) == kept
            first = await store.usage_records(None, "", 2, retention)
            assert first == kept[:2]
            assert await store.usage_records(None, first[-1].key, 2, retention) == kept[2:4]
            alice = await store.usage_records("alice", "", 10, retention)
            assert alice == [kept[0], kept[2], kept[4]]
            since = usage_key_prefix(start + 3)
            assert await store.usage_records(None, since, 10, retention) == kept[3:]
            # Past the retention, records are neither listed nor kept.
            clock.now = start + 2 + retention + 0.5
            assert await store.usage_records(None, "", 10, retention) == kept[3:]
            late = UsageRecord(usage_key(clock.now, "late"), "bob", "{}")
            await store.keep_usage(late, retention)
            clock.now = start  # pruned: not even an earlier clock brings them back
            assert await store.usage_records(None, "", 10, retention) == [*kept[3:], late]

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


def ephemeral(uses: int) -> Grant:
    return Grant(90, origin="https://app.example", client="a", ephemeral="{}", uses=uses)


async def issue_grant(store: StateStore, grant: Grant, limits: Limits = ROOMY) -> str:
    token = await store.admit(grant, limits)
    assert isinstance(token, str), token
    return token
