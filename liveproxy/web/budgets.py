"""The server's budgets (``BUDGET_PER_CLIENT``, ``BUDGET_TOTAL``, the ``liveproxy_budget`` JWT
claim) on the state store: the sign-in check, ``GET /api/usage``'s answer, each session's guard.

A client's budget is its claim when its JWT has one, else ``BUDGET_PER_CLIENT``; the claim is
read at sign-in, where a malformed one (or money without a matching price table) refuses the
sign-in with 401 ``unauthorized`` saying why. Exhausted at sign-in is 429 ``budget_exhausted``
with ``Retry-After`` the seconds to the end of the last exhausted window; the store unreachable
is 503 ``state_unavailable`` (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from liveproxy.allowances import Budget, BudgetError, check_countable, parse_budget
from liveproxy.config import Config
from liveproxy.core.budget import (
    KEEP_AFTER_WINDOW,
    Charge,
    Charged,
    Line,
    Tally,
    Used,
    budget_lines,
    exhausted_lines,
    retry_after,
)
from liveproxy.core.budget_guard import BudgetGuard, LedgerUnavailable
from liveproxy.store import StateStore, StoreUnavailable, retry_seconds
from liveproxy.web.responses import Refusal, state_unavailable

#: The JWT claim that overrides ``BUDGET_PER_CLIENT`` for its user.
CLAIM: Final = "liveproxy_budget"


class StoreLedger:
    """The state store as a guard's :class:`~liveproxy.core.budget_guard.Ledger`."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        try:
            return await self._store.charge(charges)
        except StoreUnavailable as exc:
            raise LedgerUnavailable(str(exc)) from None


class Budgets:
    """The configured budgets; ``on_refusal(scope)`` counts each refusal and ending."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        on_refusal: Callable[[str], None] = lambda scope: None,
    ) -> None:
        self.per_client: Budget | None = config.budget_per_client
        self.total: Budget | None = config.budget_total
        self._priced = config.prices_file is not None
        self._ledger = StoreLedger(store)
        self._on_refusal = on_refusal
        #: The wall clock windows are read on (tests set another).
        self.now: Callable[[], float] = time.time

    def client_budget(self, claims: str | None) -> Budget | None:
        """The budget of a client with these JWT claims (JSON text; None: no sign-in).

        Raises:
            BudgetError: the claim is there and malformed, or not countable here.
        """
        claim = _claim(claims)
        if claim is None:
            return self.per_client
        if not isinstance(claim, str):
            raise BudgetError(f"the {CLAIM} claim must be a string")
        budget = parse_budget(claim)
        check_countable(budget, self._priced)
        return budget

    def lines(self, client: str, claims: str | None) -> tuple[Line, ...]:
        """Raises: BudgetError (see :meth:`client_budget`)."""
        return budget_lines(self.client_budget(claims), self.total, client, self.now())

    async def check_sign_in(self, client: str, claims: str | None) -> None:
        """Refuse a sign-in whose budget is used up.

        Raises:
            Refusal: 401 ``unauthorized`` (a malformed claim), 429 ``budget_exhausted``, 503
                ``state_unavailable``.
        """
        lines, values = await self._read(client, claims)
        exhausted = exhausted_lines(lines, values)
        if exhausted:
            scopes = sorted({line.scope for line in exhausted})
            for scope in scopes:
                self._on_refusal(scope)
            what = ", ".join(f"{line.scope} {line.allowance}" for line in exhausted)
            raise Refusal(
                429,
                "budget_exhausted",
                f"the budget is used up ({what})",
                retry_seconds(retry_after(exhausted, self.now())),
            )

    async def view(self, client: str, claims: str | None) -> dict[str, Any]:
        """``GET /api/usage``'s answer: each line's use and what is left.

        Raises:
            Refusal: as :meth:`check_sign_in`'s, but never ``budget_exhausted``.
        """
        lines, values = await self._read(client, claims)
        now = self.now()
        shown = []
        for line, value in zip(lines, values, strict=True):
            allowance = line.allowance
            shown.append(
                {
                    "scope": line.scope,
                    "unit": allowance.unit,
                    "period": allowance.period,
                    "limit": allowance.amount,
                    "used": allowance.shown(value),
                    "remaining": allowance.shown(max(0.0, line.limit - value)),
                    "resets_at": datetime.fromtimestamp(line.ends_at, UTC).isoformat(),
                    "resets_in_seconds": retry_seconds(line.ends_at - now),
                }
            )
        return {"budgets": shown}

    def guard(
        self,
        client: str,
        claims: str | None,
        measure: Callable[[], Used],
        warn: Callable[[str], None] | None,
    ) -> BudgetGuard | None:
        """The guard of a session of ``client`` (None: no budget applies). A claim that no
        longer parses (it did at sign-in) leaves the client with ``BUDGET_PER_CLIENT``."""
        try:
            lines = self.lines(client, claims)
        except BudgetError:
            lines = budget_lines(self.per_client, self.total, client, self.now())
        if not lines:
            return None
        return BudgetGuard(Tally(lines), self._ledger, measure, self.now, warn)

    def ended(self, guard: BudgetGuard) -> None:
        """Count a session its budget ended, by scope."""
        for scope in sorted({line.scope for line in guard.exhausted}):
            self._on_refusal(scope)

    async def _read(self, client: str, claims: str | None) -> tuple[tuple[Line, ...], list[float]]:
        """The client's lines and their counters.

        Raises:
            Refusal: 401 ``unauthorized`` (a malformed claim), 503 ``state_unavailable``.
        """
        try:
            lines = self.lines(client, claims)
        except BudgetError as exc:
            raise Refusal(
                401, "unauthorized", f"the token's {CLAIM} claim is refused: {exc}"
            ) from None
        return lines, await self._values(lines)

    async def _values(self, lines: Sequence[Line]) -> list[float]:
        """The lines' counters, read (a charge of nothing). Raises: Refusal: 503."""
        if not lines:
            return []
        now = self.now()
        reads = [
            Charge(line.key, 0.0, 0.0, line.limit, line.ends_at - now + KEEP_AFTER_WINDOW)
            for line in lines
        ]
        try:
            charged = await self._ledger.charge(reads)
        except LedgerUnavailable:
            raise state_unavailable() from None
        return [c.value for c in charged]


def _claim(claims: str | None) -> Any:
    if claims is None:
        return None
    try:
        parsed = orjson.loads(claims)
    except orjson.JSONDecodeError:
        return None
    return parsed.get(CLAIM) if isinstance(parsed, dict) else None
