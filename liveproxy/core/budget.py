"""Budgets on the store's counters, and one session's share of them (sync).

Budgets are written and windowed as :mod:`liveproxy.allowances` says.

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

from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from liveproxy.allowances import Allowance, Budget, window

#: What a session reserves at a time, as a fraction of the allowance.
SLICE_FRACTION: Final = 0.05
#: The warning comes when what is left of an allowance falls to this fraction of it.
WARN_FRACTION: Final = 0.10
#: Counters outlive their window by this long (clock skew between hosts), then go.
KEEP_AFTER_WINDOW: Final = 3600.0


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
                line.key,
                _amount(used, line) - self.held[line.key],
                0.0,
                line.limit,
                _ttl(line, now),
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
