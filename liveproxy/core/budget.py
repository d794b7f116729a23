"""Budgets: their syntax, their UTC calendar windows, and one session's share of them (sync).

A budget (``BUDGET_PER_CLIENT``, ``BUDGET_TOTAL``, a JWT's ``liveproxy_budget`` claim) is a
comma-separated list of allowances ``<amount> <unit>/<period>``: ``60 minutes/day, 2000000
tokens/day`` or ``5 usd/month``. Units: ``minutes`` (the session's wall time, from its socket's
admission to its end, whatever it carries), ``tokens`` (the sum of the turns' ``totalTokenCount``,
:mod:`liveproxy.core.usage`) or a currency (priced by ``PRICES_FILE``, whose currency is
:data:`PRICES_CURRENCY`). Periods: ``day`` and ``month``, UTC calendar windows.

The store keeps one counter per (scope, unit, window): what has been used in it, plus what the
live sessions hold. A session works on a :class:`Tally`: it *reserves* a slice
(:data:`SLICE_FRACTION` of the allowance) before it spends, asks for another slice when what it
holds runs low, and *settles* (adds what it used past its hold; gives back what it held and did
not use, at its end). Reservations never take a counter past its limit, so with N sessions
in flight the overspend is only what each used past its hold before it ended: see
:meth:`Tally.exhausted` and the README's "Budgets".

Nothing here does I/O or reads a clock: callers pass ``now`` (Unix seconds, UTC).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import attrs

Period = Literal["day", "month"]

#: The currency of every price table (``PRICES_FILE`` prices are USD per million tokens).
PRICES_CURRENCY: Final = "usd"
#: What a session reserves at a time, as a fraction of the allowance.
SLICE_FRACTION: Final = 0.05
#: The warning comes when what is left of an allowance falls to this fraction of it.
WARN_FRACTION: Final = 0.10
#: The longest budget text read (a JWT claim is the client's to write).
MAX_TEXT: Final = 200
#: The most allowances one budget may have.
MAX_ALLOWANCES: Final = 6
#: The largest amount an allowance may name.
MAX_AMOUNT: Final = 1e12
#: Counters outlive their window by this long (clock skew between hosts), then go.
KEEP_AFTER_WINDOW: Final = 3600.0

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
        return f"{self.amount:g} {self.unit}/{self.period}"


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


@attrs.frozen
class Line:
    """One allowance of one scope (``client`` or ``total``) in the window ``now`` is in: its
    counter's ``key`` in the store."""

    scope: str
    allowance: Allowance
    key: str
    ends_at: float

    @property
    def limit(self) -> float:
        return self.allowance.limit

    @property
    def label(self) -> str:
        return f"{self.allowance.unit}/{self.allowance.period}"


def budget_lines(
    per_client: Budget | None, total: Budget | None, client: str, now: float
) -> tuple[Line, ...]:
    """The lines a session of ``client`` (or its sign-in) counts against at ``now``."""
    lines: list[Line] = []
    for scope, budget, who in (("client", per_client, f"c:{client}"), ("total", total, "t")):
        for allowance in budget.allowances if budget is not None else ():
            at = window(allowance.period, now)
            key = f"{who}|{allowance.unit}|{at.name}"
            lines.append(Line(scope, allowance, key, at.ends_at))
    return tuple(lines)


@attrs.frozen
class Charge:
    """One counter's change, made by the store in one atomic step with the others of its call:
    ``add`` (what was used past the hold, or a negative hold given back) is added whatever the
    limit, then up to ``want`` more is granted as long as the counter stays within ``limit``.
    The counter is kept ``ttl`` seconds (its window's end, and a margin)."""

    key: str
    add: float
    want: float
    limit: float
    ttl: float


@attrs.frozen
class Charged:
    """What the store did: ``granted`` of the ``want``, and the counter's ``value`` after."""

    granted: float
    value: float


def apply_charge(value: float, charge: Charge) -> Charged:
    """The rule every store applies to a counter holding ``value`` (missing: 0)."""
    value = max(0.0, value + charge.add)
    granted = max(0.0, min(charge.want, charge.limit - value))
    return Charged(granted, value + granted)


def exhausted_lines(lines: Sequence[Line], values: Sequence[float]) -> list[Line]:
    """The lines whose counter (``values``, in order) has reached its limit."""
    return [line for line, value in zip(lines, values, strict=True) if value >= line.limit]


def retry_after(exhausted: Sequence[Line], now: float) -> float:
    """Seconds until every exhausted line's window has ended."""
    return max(line.ends_at for line in exhausted) - now


#: What a session has used so far, by unit (seconds for minutes); None for money it cannot
#: price.
Used = Mapping[str, float | None]


@attrs.define
class Tally:
    """One session's share of its budgets' counters (see the module's docstring)."""

    lines: tuple[Line, ...]
    #: What the session has added to each counter (its use and its reservation).
    held: dict[str, float] = attrs.field(init=False)
    #: Each counter's value at the last store call.
    known: dict[str, float] = attrs.field(init=False)
    #: Counters that granted less than asked: asked again only once the hold is used up.
    dry: set[str] = attrs.Factory(set)
    warned: bool = False

    def __attrs_post_init__(self) -> None:
        self.held = {line.key: 0.0 for line in self.lines}
        self.known = {line.key: 0.0 for line in self.lines}

    def charges(self, used: Used, now: float) -> list[Charge] | None:
        """What to ask the store for, given ``used``; None when no call is needed (the hold
        covers what was used, and is not running low)."""
        charges, needed = [], False
        for line in self.lines:
            spent, held = _amount(used, line), self.held[line.key]
            add = max(0.0, spent - held)
            left = held + add - spent
            slice_ = line.limit * SLICE_FRACTION
            low = left <= 0 if line.key in self.dry else left < slice_ / 2
            want = slice_ if low else 0.0
            needed = needed or add > 0 or want > 0
            charges.append(Charge(line.key, add, want, line.limit, _ttl(line, now)))
        return charges if needed else None

    def final(self, used: Used, now: float) -> list[Charge]:
        """The settlement at the session's end: what it used, its unused holds given back."""
        return [
            Charge(
                line.key, _amount(used, line) - self.held[line.key], 0.0, line.limit, _ttl(line, now)
            )
            for line in self.lines
        ]

    def apply(self, charges: Sequence[Charge], results: Sequence[Charged]) -> None:
        """Take the store's answer to ``charges``."""
        for charge, result in zip(charges, results, strict=True):
            self.held[charge.key] += charge.add + result.granted
            self.known[charge.key] = result.value
            if result.granted < charge.want:
                self.dry.add(charge.key)
            else:
                self.dry.discard(charge.key)

    def exhausted(self, used: Used) -> list[Line]:
        """The lines used up: the session has spent what it holds, and the store gave no
        more. Money that cannot be priced exhausts its lines at once."""
        return [
            line
            for line in self.lines
            if used.get(line.allowance.unit, 0.0) is None
            or (line.key in self.dry and _amount(used, line) >= self.held[line.key])
        ]

    def remaining(self, used: Used) -> dict[str, float]:
        """What is left to this session, by ``unit/period`` (the least of the scopes), in the
        allowances' units: the counter's room at the last call, and the unused hold."""
        left: dict[str, float] = {}
        for line in self.lines:
            room = max(0.0, line.limit - self.known[line.key])
            room += max(0.0, self.held[line.key] - _amount(used, line))
            shown = line.allowance.shown(room)
            left[line.label] = min(left.get(line.label, shown), shown)
        return left

    def warn(self, used: Used) -> dict[str, float] | None:
        """What is left, once, the first time a line's remainder falls to
        :data:`WARN_FRACTION` of its allowance (None otherwise)."""
        if self.warned:
            return None
        for line in self.lines:
            room = max(0.0, line.limit - self.known[line.key])
            room += max(0.0, self.held[line.key] - _amount(used, line))
            if room <= line.limit * WARN_FRACTION:
                self.warned = True
                return self.remaining(used)
        return None


def _amount(used: Used, line: Line) -> float:
    return used.get(line.allowance.unit, 0.0) or 0.0


def _ttl(line: Line, now: float) -> float:
    return max(0.0, line.ends_at - now) + KEEP_AFTER_WINDOW
