"""Budgets' syntax, windows and a session's tally: plain sync rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from liveproxy.allowances import (
    Allowance,
    Budget,
    BudgetError,
    check_countable,
    parse_budget,
    window,
)
from liveproxy.core.budget import (
    KEEP_AFTER_WINDOW,
    Charge,
    Charged,
    Tally,
    apply_charge,
    budget_lines,
    exhausted_lines,
    retry_after,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_budget_parses_into_allowances() -> None:
    budget = parse_budget(" 60 Minutes/day,2000000 tokens / day, 5.5 usd/month")
    assert budget == Budget(
        (
            Allowance(60, "minutes", "day"),
            Allowance(2000000, "tokens", "day"),
            Allowance(5.5, "usd", "month"),
        )
    )
    assert str(budget) == "60 minutes/day, 2000000 tokens/day, 5.5 usd/month"
    assert budget.currencies == frozenset({"usd"})
    assert parse_budget("1 minute/month").allowances[0].limit == 60


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected '<amount> <unit>/<period>'"),
        ("60 minutes", "expected"),
        ("-5 minutes/day", "expected"),
        ("0 tokens/day", "must be > 0"),
        ("1e9 tokens/day", "expected"),
        ("10000000000000 tokens/day", "must be > 0"),
        ("5 hours/day", "the unit is"),
        ("5 minutes/week", "the period is day or month"),
        ("5 minutes/day, 6 minutes/day", "given twice"),
        ("1 tokens/day,", "expected"),
        (
            ", ".join(f"1 {u}/{p}" for u in ("tokens", "minutes", "usd", "eur") for p in ("day",))
            + ", 1 gbp/day, 1 jpy/day, 1 chf/day",
            "at most 6 allowances",
        ),
        ("9" * 300 + " tokens/day", "at most 200 characters"),
    ],
)
def test_a_malformed_budget_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(BudgetError, match=why):
        parse_budget(text)


def test_money_needs_a_price_table_in_its_currency() -> None:
    check_countable(parse_budget("5 usd/month"), priced=True)
    check_countable(parse_budget("5 minutes/day"), priced=False)
    with pytest.raises(BudgetError, match="need a PRICES_FILE"):
        check_countable(parse_budget("5 usd/month"), priced=False)
    with pytest.raises(BudgetError, match="eur budgets need a PRICES_FILE in eur; it is in usd"):
        check_countable(parse_budget("5 eur/month"), priced=True)


def test_windows_are_utc_calendar_days_and_months() -> None:
    assert window("day", at("2026-12-05T23:59:59")) == window("day", at("2026-12-05T00:00:00"))
    day = window("day", at("2026-12-05T13:00:00"))
    assert (day.name, day.ends_at) == ("2026-12-05", at("2026-12-06T00:00:00"))
    month = window("month", at("2026-12-31T23:00:00"))
    assert (month.name, month.ends_at) == ("2026-12", at("2027-01-01T00:00:00"))
    february = window("month", at("2028-02-29T10:00:00"))
    assert (february.name, february.ends_at) == ("2028-02", at("2028-03-01T00:00:00"))


def test_lines_name_their_scope_unit_and_window() -> None:
    now = at("2026-12-05T13:00:00")
    lines = budget_lines(parse_budget("60 minutes/day"), parse_budget("5 usd/month"), "ip:1", now)
    assert [(line.scope, line.key, line.limit) for line in lines] == [
        ("client", "c:ip:1|minutes|2026-12-05", 3600),
        ("total", "t|usd|2026-12", 5),
    ]
    assert budget_lines(None, None, "ip:1", now) == ()
    assert exhausted_lines(lines, [3600, 4.99]) == [lines[0]]
    assert retry_after(lines, now) == at("2027-01-01T00:00:00") - now


def test_the_store_rule_adds_use_whatever_the_limit_and_grants_within_it() -> None:
    assert apply_charge(0, Charge("k", 0, 10, 100, 1)) == Charged(10, 10)
    assert apply_charge(95, Charge("k", 0, 10, 100, 1)) == Charged(5, 100)
    assert apply_charge(95, Charge("k", 20, 10, 100, 1)) == Charged(0, 115)
    assert apply_charge(5, Charge("k", -20, 0, 100, 1)) == Charged(0, 0)


NOW = at("2026-12-05T12:00:00")
TTL = at("2026-12-06T00:00:00") - NOW + KEEP_AFTER_WINDOW


def tally(text: str = "1000 tokens/day") -> Tally:
    return Tally(budget_lines(parse_budget(text), None, "a", NOW))


def test_a_session_reserves_a_slice_then_asks_only_when_it_runs_low() -> None:
    t = tally()
    first = t.charges({"tokens": 0}, NOW)
    assert first == [Charge("c:a|tokens|2026-12-05", 0, 50, 1000, TTL)]
    t.apply(first, [Charged(50, 50)])
    assert t.charges({"tokens": 20}, NOW) is None  # 30 of 50 left: no call
    used_past = t.charges({"tokens": 80}, NOW)  # 30 past the hold, none left: settle, reserve
    assert used_past == [Charge("c:a|tokens|2026-12-05", 30, 50, 1000, TTL)]
    t.apply(used_past, [Charged(50, 130)])
    assert t.held == {"c:a|tokens|2026-12-05": 130}
    assert t.exhausted({"tokens": 80}) == []


def test_a_dry_counter_exhausts_the_session_once_its_hold_is_used() -> None:
    t = tally()
    charges = t.charges({"tokens": 0}, NOW)
    assert charges is not None
    t.apply(charges, [Charged(20, 1000)])  # only 20 were left
    assert t.charges({"tokens": 10}, NOW) is None  # dry: not asked again while it holds some
    assert t.exhausted({"tokens": 10}) == []
    again = t.charges({"tokens": 25}, NOW)
    assert again == [Charge("c:a|tokens|2026-12-05", 5, 50, 1000, TTL)]
    t.apply(again, [Charged(0, 1005)])
    assert [line.key for line in t.exhausted({"tokens": 25})] == ["c:a|tokens|2026-12-05"]


def test_the_final_settlement_gives_back_what_was_not_used() -> None:
    t = tally("1 minutes/day, 1000 tokens/day")
    charges = t.charges({"minutes": 0, "tokens": 0}, NOW)
    assert charges is not None
    t.apply(charges, [Charged(3, 3), Charged(50, 50)])
    final = t.final({"minutes": 1.5, "tokens": 70}, NOW)
    assert [(c.add, c.want) for c in final] == [(-1.5, 0), (20, 0)]


def test_the_warning_comes_once_at_ninety_percent_with_what_is_left() -> None:
    t = tally("1 minutes/day, 1000 tokens/day")
    charges = t.charges({"minutes": 0, "tokens": 0}, NOW)
    assert charges is not None
    t.apply(charges, [Charged(3, 50), Charged(50, 850)])  # others used most of it
    assert t.warn({"minutes": 0, "tokens": 0}) is None
    charges = t.charges({"minutes": 2, "tokens": 0}, NOW)
    assert charges is not None
    t.apply(charges, [Charged(0, 60), Charged(0, 850)])  # 1 s of 60 left: its hold's
    assert t.warn({"minutes": 2, "tokens": 0}) == {"minutes/day": 0.02, "tokens/day": 200}
    assert t.warn({"minutes": 3, "tokens": 0}) is None  # once


def test_money_that_cannot_be_priced_exhausts_its_lines() -> None:
    t = tally("5 usd/day, 1000 tokens/day")
    assert [line.label for line in t.exhausted({"usd": None, "tokens": 0})] == ["usd/day"]
