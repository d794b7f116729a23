"""The lease keeper on trio's clock: when a worker renews, what the store then shows of its
sessions, and how soon it hears of the operator's mark (a memory store, autojump clock)."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import Any

import orjson
import trio

from liveproxy.store import Grant, Lease, Limits
from liveproxy.store.memory import MemoryStore
from liveproxy.web.leases import MIN_RENEWAL_GAP_SECONDS, OPERATOR_POLL_SECONDS, LeaseKeeper

LEASE_SECONDS = 30.0


class RenewalsSeen(MemoryStore):
    """The memory store, noting when each renewal came."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[float] = []

    async def renew_sessions(
        self, leases: Collection[Lease], summaries: Mapping[str, str]
    ) -> frozenset[str]:
        self.calls.append(trio.current_time())
        return await super().renew_sessions(leases, summaries)


async def started(store: MemoryStore, lease_id: str) -> Lease:
    token = await store.admit(Grant(90, client="c"), Limits(token_ttl=30, max_sessions=100))
    assert isinstance(token, str)
    lease = await store.start_session(token, lease_id)
    assert lease is not None
    return lease


def summary(n: int) -> dict[str, Any]:
    return {"model": "m", "n": n}


async def test_a_new_session_is_listed_within_the_gap_and_a_mark_heard_within_the_poll(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStore(trio.current_time, LEASE_SECONDS)
    keeper = LeaseKeeper(store, LEASE_SECONDS)
    keeper.where = {"host": "h", "worker": 3}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.run)
        await trio.sleep(5)  # nothing held: nothing renewed, nothing listed
        assert await store.live_sessions("", 10) == []
        begun = trio.current_time()
        ends = trio.Event()
        keeper.hold(await started(store, "s1"), lambda: summary(1), ends)
        while not await store.live_sessions("", 10):  # noqa: ASYNC110 - the store's state
            await trio.sleep(0.01)
        assert trio.current_time() - begun <= MIN_RENEWAL_GAP_SECONDS + 0.02
        (shown,) = await store.live_sessions("", 10)
        assert orjson.loads(shown.summary) == {
            "id": "s1",
            "host": "h",
            "worker": 3,
            "model": "m",
            "n": 1,
        }
        # Marked now, heard at the next renewal: within the poll.
        await trio.sleep(0.1)
        assert await store.mark_session_end("s1")
        marked_at = trio.current_time()
        await ends.wait()
        assert trio.current_time() - marked_at <= OPERATOR_POLL_SECONDS
        keeper.release("s1")
        nursery.cancel_scope.cancel()


async def test_sessions_starting_together_are_renewed_in_one_call(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = RenewalsSeen(trio.current_time, LEASE_SECONDS)
    calls = store.calls
    keeper = LeaseKeeper(store, LEASE_SECONDS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.run)
        for n in range(20):
            keeper.hold(await started(store, f"s{n}"), lambda: summary(0), trio.Event())
            await trio.sleep(0.01)
        await trio.sleep(OPERATOR_POLL_SECONDS * 3)
        assert len(await store.live_sessions("", 100)) == 20
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert all(gap >= MIN_RENEWAL_GAP_SECONDS for gap in gaps)
        assert len(calls) <= 1 + 3 + 1  # the burst's call(s), then one per poll
        nursery.cancel_scope.cancel()
