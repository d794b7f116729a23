"""Budgets' syntax and their UTC calendar windows (sync, pure; read by the configuration).

A budget (``BUDGET_PER_CLIENT``, ``BUDGET_TOTAL``, a JWT's ``liveproxy_budget`` claim) is a
comma-separated list of allowances ``<amount> <unit>/<period>``: ``60 minutes/day, 2000000
tokens/day`` or ``5 usd/month``. Units: ``minutes`` (a session's wall time, from its socket's
admission to its end, whatever it carries), ``tokens`` (the sum of the turns'
``totalTokenCount``, :mod:`liveproxy.core.usage`) or a currency (priced by ``PRICES_FILE``,
whose currency is :data:`PRICES_CURRENCY`). Periods: ``day`` and ``month``, UTC calendar
windows. How sessions spend them: :mod:`liveproxy.core.budget`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import attrs

Period = Literal["day", "month"]

#: The currency of every price table (``PRICES_FILE`` prices are USD per million tokens).
PRICES_CURRENCY: Final = "usd"
#: The longest budget text read (a JWT claim is the client's to write).
MAX_TEXT: Final = 200
#: The most allowances one budget may have.
MAX_ALLOWANCES: Final = 6
#: The largest amount an allowance may name.
MAX_AMOUNT: Final = 1e12

_ALLOWANCE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)\s*/\s*([a-z]+)$")
_UNITS: Final = {"minute": "minutes", "minutes": "minutes", "token": "tokens", "tokens": "tokens"}
_PERIODS: Final[dict[str, Period]] = {"day": "day", "month": "month"}


class BudgetError(ValueError):
    """A budget that does not parse, or that cannot be counted here."""


@attrs.frozen
class Allowance:
    """``amount`` of ``unit`` per ``period``."""

    amount: float
    unit: str
    period: Period

    @property
    def limit(self) -> float:
        """The amount in the unit counters count: seconds for minutes."""
        return self.amount * 60 if self.unit == "minutes" else self.amount

    def shown(self, counted: float) -> float:
        """``counted`` (a counter's unit) in the allowance's unit, rounded for people."""
        if self.unit == "minutes":
            return round(counted / 60, 2)
        if self.unit == "tokens":
            return float(round(counted))
        return round(counted, 6)

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount.is_integer() else self.amount
        return f"{amount} {self.unit}/{self.period}"


@attrs.frozen
class Budget:
    allowances: tuple[Allowance, ...]

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset(a.unit for a in self.allowances if a.unit not in ("minutes", "tokens"))

    def __str__(self) -> str:
        return ", ".join(map(str, self.allowances))


def parse_budget(text: str) -> Budget:
    """``text`` as a budget.

    Raises:
        BudgetError: not one (the message says what is wrong, quoting at most the text's start).
    """
    if len(text) > MAX_TEXT:
        raise BudgetError(f"a budget is at most {MAX_TEXT} characters")
    allowances: list[Allowance] = []
    for part in text.lower().split(","):
        part = part.strip()
        match = _ALLOWANCE.match(part)
        if match is None:
            raise BudgetError(
                f"expected '<amount> <unit>/<period>' (e.g. '60 minutes/day'), got {part[:40]!r}"
            )
        number, unit_word, period_word = match.groups()
        amount = float(number)
        if not 0 < amount <= MAX_AMOUNT:
            raise BudgetError(f"{part!r}: the amount must be > 0 and <= {MAX_AMOUNT:g}")
        unit = _UNITS.get(unit_word)
        if unit is None:
            if len(unit_word) != 3:
                raise BudgetError(f"{part!r}: the unit is minutes, tokens or a currency (usd)")
            unit = unit_word
        period = _PERIODS.get(period_word)
        if period is None:
            raise BudgetError(f"{part!r}: the period is day or month")
        if any((a.unit, a.period) == (unit, period) for a in allowances):
            raise BudgetError(f"{part!r}: {unit}/{period} is given twice")
        allowances.append(Allowance(amount, unit, period))
    if len(allowances) > MAX_ALLOWANCES:
        raise BudgetError(f"a budget has at most {MAX_ALLOWANCES} allowances")
    return Budget(tuple(allowances))


def check_countable(budget: Budget, priced: bool) -> None:
    """Raises BudgetError: ``budget`` names money and there is no price table (``priced``
    False) or the table's currency is another."""
    for currency in sorted(budget.currencies):
        if not priced:
            raise BudgetError(f"{currency} budgets need a PRICES_FILE (none is set)")
        if currency != PRICES_CURRENCY:
            raise BudgetError(
                f"{currency} budgets need a PRICES_FILE in {currency}; it is in {PRICES_CURRENCY}"
            )


@attrs.frozen
class Window:
    """A UTC calendar window: its name (``2026-12-05``, ``2026-12``) and when it ends."""

    name: str
    ends_at: float


def window(period: Period, now: float) -> Window:
    """The window of ``period`` that ``now`` is in."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return Window(day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).timestamp())
    start = day.replace(day=1)
    following = start.replace(year=start.year + 1, month=1) if start.month == 12 else None
    following = following or start.replace(month=start.month + 1)
    return Window(start.strftime("%Y-%m"), following.timestamp())
