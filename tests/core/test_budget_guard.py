"""The budget guard on its own, over a real memory store, under trio's autojump clock: when it
ends a session (a turn under way is let finish, within its grace), and its store calls."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from liveproxy.allowances import parse_budget
from liveproxy.contract.endings import BUDGET_EXHAUSTED
from liveproxy.contract.errors import StateUnavailable
from liveproxy.core.budget import Charge, Charged, Tally, budget_lines
from liveproxy.core.budget_guard import TURN_GRACE, BudgetGuard, Ledger, LedgerUnavailable
from liveproxy.store.memory import MemoryStore
from liveproxy.web.budgets import StoreLedger

NOW = 1_796_000_000.0  # 2026-12-01


class CountingLedger(StoreLedger):
    """The memory store's ledger, counting its calls."""

    calls = 0

    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        self.calls += 1
        return await super().charge(charges)


class DownLedger:
    async def charge(self, charges: Sequence[Charge]) -> list[Charged]:
        raise LedgerUnavailable("down")


def guard(text: str, used: dict[str, float | None], ledger: Ledger) -> BudgetGuard:
    tally = Tally(budget_lines(parse_budget(text), None, "a", NOW))
    return BudgetGuard(tally, ledger, lambda: used, lambda: NOW)


async def running(g: BudgetGuard, nursery: trio.Nursery) -> list[object]:
    """``g.run()`` started in ``nursery`` and waiting: the list its outcome is added to."""
    outcome: list[object] = []

    async def run() -> None:
        outcome.append(await g.run())

    nursery.start_soon(run)
    await trio.testing.wait_all_tasks_blocked()
    return outcome


async def test_tokens_used_up_between_turns_end_the_session_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ledger = CountingLedger(MemoryStore(trio.current_time))
    used: dict[str, float | None] = {"tokens": 0}
    g = guard("100 tokens/day", used, ledger)
    async with trio.open_nursery() as nursery:
        outcome = await running(g, nursery)
        assert ledger.calls == 1  # the first reservation
        for _ in range(1000):  # audio frames: no call
            g.metered(False, False, True)
        await trio.testing.wait_all_tasks_blocked()
        assert ledger.calls == 1
        used["tokens"] = 60
        g.metered(True, True, False)  # the turn's report: one call
        await trio.testing.wait_all_tasks_blocked()
        assert ledger.calls == 2
        assert not outcome
        used["tokens"] = 130
        started = trio.current_time()
        g.metered(True, True, False)
    assert outcome == [BUDGET_EXHAUSTED]
    assert trio.current_time() == started
    assert [line.key for line in g.exhausted] == [g.tally.lines[0].key]


@pytest.mark.parametrize("turn_ends_after", [2.0, None])
async def test_a_turn_under_way_is_let_finish_within_the_grace(
    autojump_clock: trio.testing.MockClock, turn_ends_after: float | None
) -> None:
    used: dict[str, float | None] = {"tokens": 0}
    g = guard("100 tokens/day", used, StoreLedger(MemoryStore(trio.current_time)))
    async with trio.open_nursery() as nursery:
        outcome = await running(g, nursery)
        used["tokens"] = 150
        g.metered(True, False, True)  # a report mid-turn, the model still speaking
        started = trio.current_time()
        if turn_ends_after is not None:
            await trio.sleep(turn_ends_after)
            assert not outcome
            g.metered(False, True, False)
    assert outcome == [BUDGET_EXHAUSTED]
    waited = trio.current_time() - started
    assert waited == (TURN_GRACE if turn_ends_after is None else turn_ends_after)


async def test_minutes_are_looked_at_each_second(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    used: dict[str, float | None] = {}
    tally = Tally(budget_lines(parse_budget("1 minutes/day"), None, "a", NOW))

    def measure() -> dict[str, float | None]:
        used["minutes"] = trio.current_time() - start
        return used

    g = BudgetGuard(tally, StoreLedger(MemoryStore(trio.current_time)), measure, lambda: NOW)
    assert await g.run() == BUDGET_EXHAUSTED
    assert 60 <= trio.current_time() - start <= 61


async def test_an_unreachable_ledger_at_the_start_fails_closed() -> None:
    with pytest.raises(StateUnavailable):
        await guard("100 tokens/day", {"tokens": 0}, DownLedger()).run()
