"""Budgets end to end on the in-process proxy and the emulator: the warning and the ending
mid-session, the 429 at sign-in with its ``Retry-After``, a JWT's own budget, the windows'
roll-over (trio's autojump clock), ``GET /api/usage``, an unreachable store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trio

from liveproxy.allowances import parse_budget
from liveproxy.config import SignInSettings
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.http import HttpResponse, request
from tests.web.test_signin_route import SECRET, token
from tests.wsclient import BrowserClient

#: 23:58:00 UTC: the day's window ends 120 s later.
EVENING = datetime(2026, 12, 5, 23, 58, tzinfo=UTC).timestamp()


def wall_at(proxy: Proxy, start: float) -> None:
    """The proxy's budgets read windows on a wall clock that starts at ``start`` and moves
    with trio's (autojump) clock."""
    budgets = proxy.state.budgets
    assert budgets is not None
    origin = trio.current_time()
    budgets.now = lambda: start + trio.current_time() - origin


async def auth(proxy: Proxy, authorization: str | None = None) -> HttpResponse:
    headers = {"Authorization": authorization} if authorization else {}
    return await request("127.0.0.1", proxy.port, "POST", "/api/auth", b"", headers)


async def usage(proxy: Proxy, authorization: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": authorization} if authorization else {}
    response = await request("127.0.0.1", proxy.port, "GET", "/api/usage", None, headers)
    assert response.status == 200, response.body
    answer: dict[str, Any] = response.json()
    return answer


async def until_closed(client: BrowserClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSON events up to the close (checked to be 1000), and the last one."""
    ended = await client.wait_closed()
    assert ended.code == 1000
    return ended.events, ended.last_event


async def test_minutes_run_out_mid_session_with_one_warning_then_budget_exhausted(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(
        budget_per_client=parse_budget("1 minutes/day"), session_time_limit=600
    )
    wall_at(proxy, EVENING - 3600)
    started = trio.current_time()
    async with proxy.session(TEXT_SETUP) as client:
        events, last = await until_closed(client)
    ended_after = trio.current_time() - started
    warnings = [e["usageWarning"] for e in events if "usageWarning" in e]
    assert len(warnings) == 1
    assert 0 < warnings[0]["remaining"]["minutes/day"] <= 0.1
    assert last["sessionEnd"]["reason"] == "budget_exhausted"
    assert 60 <= ended_after <= 62  # nothing under way: ended at once (a tick late at most)
    answer = await usage(proxy)
    (line,) = answer["budgets"]
    assert line["scope"] == "client"
    assert line["limit"] == 1
    assert 1 <= line["used"] <= 1.04  # settled: its wall time, not what it had reserved
    assert line["remaining"] == 0


async def test_an_exhausted_client_is_refused_at_sign_in_until_the_window_ends(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(
        budget_per_client=parse_budget("1 minutes/day"), session_time_limit=600
    )
    wall_at(proxy, EVENING - 60)  # 23:57: 180 s left in the day
    async with proxy.session(TEXT_SETUP) as client:
        _, last = await until_closed(client)
    assert last["sessionEnd"]["reason"] == "budget_exhausted"
    refused = await auth(proxy)
    assert refused.status == 429
    assert refused.json()["error"]["code"] == "budget_exhausted"
    budgets = proxy.state.budgets
    assert budgets is not None
    day_ends = datetime(2026, 12, 6, tzinfo=UTC).timestamp()
    assert abs(int(refused.headers["retry-after"]) - (day_ends - budgets.now())) <= 2
    assert (await auth(proxy, None)).status == 429
    await trio.sleep(int(refused.headers["retry-after"]))  # past midnight: a new window
    assert (await auth(proxy)).status == 200
    (line,) = (await usage(proxy))["budgets"]
    assert (line["used"], line["remaining"]) == (0, 1)
    assert line["resets_at"] == "2026-12-07T00:00:00+00:00"


async def test_a_jwt_claim_overrides_the_client_budget(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(
        signin=SignInSettings(jwt_secret=SECRET, audience="app"),
        auth_rate_limit=None,
        budget_per_client=parse_budget("100 minutes/day"),
        budget_total=parse_budget("1000 minutes/month"),
    )
    wall_at(proxy, EVENING - 3600)
    plain = f"Bearer {token('plain', aud='app')}"
    own = f"Bearer {token('vip', aud='app', liveproxy_budget='2 minutes/day, 500 tokens/day')}"
    assert [(b["scope"], b["unit"], b["limit"]) for b in (await usage(proxy, plain))["budgets"]] == [
        ("client", "minutes", 100),
        ("total", "minutes", 1000),
    ]
    assert [(b["scope"], b["unit"], b["limit"]) for b in (await usage(proxy, own))["budgets"]] == [
        ("client", "minutes", 2),
        ("client", "tokens", 500),
        ("total", "minutes", 1000),
    ]
    for malformed in ("2 hours/day", 5, "1 usd/day"):
        bad = f"Bearer {token('odd', aud='app', liveproxy_budget=malformed)}"
        refused = await auth(proxy, bad)
        assert refused.status == 401
        error = refused.json()["error"]
        assert error["code"] == "unauthorized"
        assert "liveproxy_budget claim is refused" in error["message"]
    assert (await auth(proxy, own)).status == 200
