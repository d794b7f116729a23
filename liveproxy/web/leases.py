"""This worker's session leases, renewed while their sessions live, with what the operator sees
of each session and hears of the operator's marks to end them."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import trio

from liveproxy.store import Lease, StateStore, StoreUnavailable

log = logging.getLogger("liveproxy")

#: The longest between two renewals (whatever the lease time): how late a worker may hear of
#: the operator's mark to end one of its sessions.
OPERATOR_POLL_SECONDS: Final = 2.0
#: The shortest between two renewals: a new session is renewed (so listed) this soon, sessions
#: starting together in one call.
MIN_RENEWAL_GAP_SECONDS: Final = 0.5


@attrs.define(eq=False)
class Held:
    """A live session's lease, what the operator sees of it (``summary()``: JSON data, read
    at each renewal), and the event set when the operator ends it."""

    lease: Lease
    summary: Callable[[], dict[str, Any]]
    operator_ends: trio.Event


class LeaseKeeper:
    """Holds the leases of this worker's live sessions and renews them all, in one store call,
    every third of the lease time or :data:`OPERATOR_POLL_SECONDS`, whichever is shorter
    (nothing while it holds none), and soon after a session starts (within
    :data:`MIN_RENEWAL_GAP_SECONDS` of the last renewal: at most one call per gap).

    The same call keeps each session's summary (``where`` this worker runs added: host and
    worker number) and answers which sessions the operator has marked to end: their
    :attr:`Held.operator_ends` is set. A renewal the store cannot answer is logged (once per
    outage) and retried at the next tick; sessions go on meanwhile. A lease the store lost (an
    outage longer than the lease time, a Redis restart) comes back at the first renewal that
    gets through.
    """

    def __init__(self, store: StateStore, lease_seconds: float) -> None:
        self._store = store
        self._interval = min(lease_seconds / 3, OPERATOR_POLL_SECONDS)
        self.held: dict[str, Held] = {}
        #: Where this worker runs, as the operator's listing shows it.
        self.where: dict[str, Any] = {"host": socket.gethostname(), "worker": 0, "pid": os.getpid()}
        self._failing = False
        self._new_session = trio.Event()

    def hold(
        self, lease: Lease, summary: Callable[[], dict[str, Any]], operator_ends: trio.Event
    ) -> None:
        """Renew ``lease`` from now on (until :meth:`release`); its session shows ``summary()``,
        and ``operator_ends`` is set if the operator ends it."""
        self.held[lease.id] = Held(lease, summary, operator_ends)
        self._new_session.set()

    def release(self, lease_id: str) -> None:
        """Stop renewing the lease (its session has ended)."""
        del self.held[lease_id]

    async def run(self) -> None:
        """Renew until cancelled."""
        gap = min(MIN_RENEWAL_GAP_SECONDS, self._interval)
        while True:
            with trio.move_on_after(self._interval - gap):
                await self._new_session.wait()
            await trio.sleep(gap)
            self._new_session = trio.Event()
            await self.renew_once()

    async def renew_once(self) -> None:
        if not self.held:
            return
        held = list(self.held.values())
        summaries = {h.lease.id: self._summary(h) for h in held}
        try:
            with trio.fail_after(self._interval):
                marked = await self._store.renew_sessions([h.lease for h in held], summaries)
        except (StoreUnavailable, trio.TooSlowError) as exc:
            if not self._failing:
                log.warning("state store unreachable: session leases not renewed (%s)", exc)
            self._failing = True
            return
        if self._failing:
            log.info("state store reachable again: session leases renewed")
        self._failing = False
        for lease_id in marked:
            found = self.held.get(lease_id)
            if found is not None and not found.operator_ends.is_set():
                log.info("session %s: ended by the operator", lease_id)
                found.operator_ends.set()

    def _summary(self, held: Held) -> str:
        """The session's summary as the store keeps it (JSON text)."""
        try:
            shown = held.summary()
        except Exception:  # a summary must never stop the renewal of every lease
            log.exception("session %s: its summary failed", held.lease.id)
            shown = {}
        return orjson.dumps({"id": held.lease.id, **self.where, **shown}).decode()
