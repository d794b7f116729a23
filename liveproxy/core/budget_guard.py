"""A session's budget guard: one of the session's racers, it ends the session when its budget
is used up (the decisions are :class:`~liveproxy.core.budget.Tally`'s).

It reserves before the session spends, then wakes at each usage report or ``turnComplete``
(:meth:`BudgetGuard.metered`, called for every upstream event: a flag set, no I/O) and every
:data:`TICK` seconds for wall minutes, and calls the ledger only when the tally asks (use past
the hold, or a hold running low): at most one store call per usage report or slice, never one
per audio frame. The route settles the session's last use with :meth:`BudgetGuard.settle`.

Outcomes: ``budget_exhausted`` when a line is used up, at the end of the model's turn if one is
under way and ends within :data:`TURN_GRACE` seconds, else at once; ``state_unavailable`` when
the ledger cannot be reached and the session has used what it holds (until then it goes on).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import orjson
import trio

from liveproxy.contract.endings import BUDGET_EXHAUSTED, Outcome
from liveproxy.contract.errors import StateUnavailable
from liveproxy.core.budget import Charge, Charged, Line, Tally, Used

log = logging.getLogger("liveproxy")

#: How often wall minutes are looked at (seconds).
TICK: Final = 1.0
#: How long a used-up session waits for the model's turn under way to end.
TURN_GRACE: Final = 5.0
#: After a failed ledger call, the next is not tried before this many seconds.
RETRY_SECONDS: Final = 5.0


class LedgerUnavailable(Exception):
    """The ledger (the state store) could not be reached."""


class Ledger(Protocol):
    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        """Apply ``charges`` atomically. Raises: LedgerUnavailable."""
        ...


def usage_warning(remaining: dict[str, float]) -> str:
    """The browser's ``usageWarning`` message."""
    return orjson.dumps({"usageWarning": {"remaining": remaining}}).decode()


class BudgetGuard:
    """Guards one session's budget lines; :meth:`run` it as a racer.

    ``measure`` says what the session has used (see :data:`~liveproxy.core.budget.Used`),
    ``now`` is the wall clock (Unix seconds), ``warn`` gets the ``usageWarning`` once (None:
    a client with no such message).
    """

    def __init__(
        self,
        tally: Tally,
        ledger: Ledger,
        measure: Callable[[], Used],
        now: Callable[[], float],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.tally = tally
        self._ledger = ledger
        self._measure = measure
        self._now = now
        self._warn = warn
        self._wake = trio.Event()
        self._turn_ended = trio.Event()
        self._in_turn = False
        self._retry_at = -math.inf
        self._ticks = any(line.allowance.unit == "minutes" for line in tally.lines)
        #: The lines that ended the session (for logs and metrics).
        self.exhausted: list[Line] = []

    def metered(self, reported: bool, turn_complete: bool, generating: bool) -> None:
        """An upstream event came: with a usage report, ending the model's turn, carrying the
        model's output (its turn is under way)."""
        if turn_complete:
            self._in_turn = False
            self._turn_ended.set()
            self._turn_ended = trio.Event()
        elif generating:
            self._in_turn = True
        if reported or turn_complete:
            self._wake.set()

    async def run(self) -> Outcome:
        """Return ``budget_exhausted`` once a line is used up.

        Raises:
            StateUnavailable: the ledger is unreachable at the start, or once the session has
                used what it holds.
        """
        if not await self._charge(self.tally.charges(self._measure(), self._now())):
            raise StateUnavailable("the budget cannot be checked: the state store is unreachable")
        while True:
            used = self._measure()
            charges = self.tally.charges(used, self._now())
            if charges is not None and trio.current_time() >= self._retry_at:
                await self._charge(charges)
            exhausted = self.tally.exhausted(used)
            if exhausted:
                self.exhausted = exhausted
                break
            if self._retry_at > trio.current_time() and _uncovered(self.tally, used):
                raise StateUnavailable(
                    "the budget cannot be checked: the state store is unreachable"
                )
            remaining = self.tally.warn(used)
            if remaining is not None and self._warn is not None:
                self._warn(usage_warning(remaining))
            with trio.move_on_after(TICK if self._ticks else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
        if self._in_turn:
            with trio.move_on_after(TURN_GRACE):
                await self._turn_ended.wait()
        return BUDGET_EXHAUSTED

    async def settle(self) -> None:
        """Settle the session's use at its end: what it used past its holds is added, what it
        held and did not use given back (a ledger unreachable: logged; its holds then count
        until their window ends)."""
        charges = self.tally.final(self._measure(), self._now())
        try:
            await self._ledger.charge(charges)
        except LedgerUnavailable:
            log.warning("state store unreachable: a session's budget use was not settled")

    async def _charge(self, charges: list[Charge] | None) -> bool:
        """Ask the ledger; False (and no call for :data:`RETRY_SECONDS`) when unreachable."""
        if charges is None:
            return True
        try:
            results = await self._ledger.charge(charges)
        except LedgerUnavailable:
            log.warning("state store unreachable: the session goes on with its budget holds")
            self._retry_at = trio.current_time() + RETRY_SECONDS
            return False
        self.tally.apply(charges, results)
        return True


def _uncovered(tally: Tally, used: Used) -> bool:
    """Whether the session has used all it holds of a line."""
    return any(
        (used.get(line.allowance.unit) or 0.0) >= tally.held[line.key] for line in tally.lines
    )
