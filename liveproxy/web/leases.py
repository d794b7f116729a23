"""This worker's session leases, renewed while their sessions live."""

from __future__ import annotations

import logging

import trio

from liveproxy.store import Lease, StateStore, StoreUnavailable

log = logging.getLogger("liveproxy")


class LeaseKeeper:
    """Holds the leases of this worker's live sessions and renews them all, in one store call,
    every third of the lease time.

    A renewal the store cannot answer is logged (once per outage) and retried at the next
    tick; sessions go on meanwhile. A lease the store lost (an outage longer than the lease
    time, a Redis restart) comes back at the first renewal that gets through.
    """

    def __init__(self, store: StateStore, lease_seconds: float) -> None:
        self._store = store
        self._interval = lease_seconds / 3
        self.held: dict[str, Lease] = {}
        self._failing = False

    async def run(self) -> None:
        """Renew until cancelled."""
        while True:
            await trio.sleep(self._interval)
            await self.renew_once()

    async def renew_once(self) -> None:
        if not self.held:
            return
        try:
            with trio.fail_after(self._interval):
                await self._store.renew(list(self.held.values()))
        except (StoreUnavailable, trio.TooSlowError) as exc:
            if not self._failing:
                log.warning("state store unreachable: session leases not renewed (%s)", exc)
            self._failing = True
            return
        if self._failing:
            log.info("state store reachable again: session leases renewed")
        self._failing = False
