"""Budgets end to end on the in-process proxy and the emulator: the warning and the ending
mid-session, the 429 at sign-in with its ``Retry-After``, a JWT's own budget, the windows'
roll-over (trio's autojump clock), ``GET /api/usage``, an unreachable store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket

from liveproxy.allowances import parse_budget
from liveproxy.config import SignInSettings
from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory, proxy_on
from tests.http import HttpResponse, request
from tests.models import TEST_MODEL
from tests.redis_server import RedisServer
from tests.web.test_signin_route import SECRET, token
from tests.wsclient import BrowserClient, has_key

NATIVE_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
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
    minting = await request("127.0.0.1", proxy.port, "POST", "/api/auth", b'{"ephemeral": {}}')
    assert (minting.status, minting.json()["error"]["code"]) == (429, "budget_exhausted")
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
    assert [
        (b["scope"], b["unit"], b["limit"]) for b in (await usage(proxy, plain))["budgets"]
    ] == [
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


async def talk_until_ended(client: BrowserClient) -> tuple[list[dict[str, Any]], int]:
    """Text turns until the proxy ends the session: every event, and the close code."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(30):
        try:
            for n in range(1000):
                await client.send_json({"type": "text", "text": f"turn {n}"})
                while True:
                    frame = await client.recv()
                    if isinstance(frame, str):
                        events.append(orjson.loads(frame))
                        if has_key("serverContent", "turnComplete")(frame):
                            break
        except ConnectionClosed as closed:
            reason = closed.reason
            return events, -1 if reason is None else reason.code
    raise AssertionError("the session was not ended")


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_tokens_run_out_mid_session_in_every_store(
    kind: str, emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    settings = {"budget_per_client": parse_budget("3000 tokens/day")}
    async with proxy_on(kind, emulator, tmp_path, redis, **settings) as proxy:
        async with proxy.session(TEXT_SETUP) as client:
            events, code = await talk_until_ended(client)
        assert code == 1000
        end = events[-1]["sessionEnd"]
        assert end["reason"] == "budget_exhausted"
        warnings = [e["usageWarning"] for e in events if "usageWarning" in e]
        assert len(warnings) == 1
        assert 0 < warnings[0]["remaining"]["tokens/day"] <= 300
        assert events.index({"usageWarning": warnings[0]}) < len(events) - 1
        reports = [e["usageMetadata"]["totalTokenCount"] for e in events if "usageMetadata" in e]
        used = end["stats"]["usage"]["total_tokens"]
        assert used == sum(reports)
        assert 3000 <= used <= 3000 + 2 * max(reports)  # the margin: two turns past its hold
        (line,) = (await usage(proxy))["budgets"]
        assert (line["used"], line["remaining"]) == (used, 0)
        assert (await auth(proxy)).json()["error"]["code"] == "budget_exhausted"


async def test_an_unreachable_store_refuses_sign_in_and_ends_a_session_once_its_hold_is_used(
    emulator: Emulator, tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = {"budget_per_client": parse_budget("3000 tokens/day")}
    async with proxy_on("redis", emulator, tmp_path, redis_server, **settings) as proxy:
        async with proxy.session(TEXT_SETUP) as client:
            redis_server.stop()
            events, code = await talk_until_ended(client)
        assert code == 1013
        error = events[-1]["error"]
        assert error["code"] == "state_unavailable"
        reports = [e["usageMetadata"]["totalTokenCount"] for e in events if "usageMetadata" in e]
        assert len(reports) >= 2  # it went on with what it held (150 tokens: a few turns)
        assert sum(reports[:-1]) < 150 <= sum(reports)
        refused = await auth(proxy)
        assert (refused.status, refused.json()["error"]["code"]) == (503, "state_unavailable")
        answer = await request("127.0.0.1", proxy.port, "GET", "/api/usage")
        assert (answer.status, answer.json()["error"]["code"]) == (503, "state_unavailable")


async def test_a_native_client_gets_no_warning_and_a_1000_close_saying_why(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(budget_total=parse_budget("300 tokens/day"))
    minted = await request("127.0.0.1", proxy.port, "POST", "/api/auth", b'{"ephemeral": {}}')
    token = minted.json()["name"].removeprefix("auth_tokens/")
    messages: list[dict[str, Any]] = []
    reason = None
    async with open_websocket(
        "127.0.0.1", proxy.port, f"{NATIVE_PATH}?access_token={token}", use_ssl=False
    ) as ws:
        config = {"responseModalities": ["TEXT"]}
        setup = {"setup": {"model": f"models/{TEST_MODEL}", "generationConfig": config}}
        await ws.send_message(orjson.dumps(setup).decode())
        with trio.fail_after(30):
            try:
                for n in range(1000):
                    text = orjson.dumps({"realtimeInput": {"text": f"{n}"}}).decode()
                    await ws.send_message(text)
                    while True:
                        messages.append(orjson.loads(await ws.get_message()))
                        if "turnComplete" in messages[-1].get("serverContent", {}):
                            break
            except ConnectionClosed as closed:
                reason = closed.reason
    assert reason is not None
    assert (reason.code, reason.reason) == (1000, "budget_exhausted")
    assert not any("usageWarning" in m for m in messages)  # Gemini has no such message
    used = sum(m["usageMetadata"]["totalTokenCount"] for m in messages if "usageMetadata" in m)
    assert used >= 300
    (line,) = (await usage(proxy))["budgets"]
    assert (line["scope"], line["used"]) == ("total", used)


async def test_usage_is_refused_to_another_origin_and_rate_limited_with_sign_ins(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(
        budget_per_client=parse_budget("60 minutes/day"), auth_rate_limit=(2, 60.0)
    )
    evil = {"Origin": "https://evil.example"}
    refused = await request("127.0.0.1", proxy.port, "GET", "/api/usage", None, evil)
    assert (refused.status, refused.json()["error"]["code"]) == (403, "forbidden_origin")
    mine = {"Origin": f"http://127.0.0.1:{proxy.port}"}
    allowed = await request("127.0.0.1", proxy.port, "GET", "/api/usage", None, mine)
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == mine["Origin"]
    assert (await auth(proxy)).status == 200  # the second sign-in of the bucket
    limited = await request("127.0.0.1", proxy.port, "GET", "/api/usage", None, mine)
    assert (limited.status, limited.json()["error"]["code"]) == (429, "rate_limited")


async def test_twenty_idle_sessions_of_one_client_overspend_minutes_by_at_most_a_tick_each(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(
        budget_per_client=parse_budget("2 minutes/day"),
        session_time_limit=600,
        max_sessions_per_client=0,
        auth_rate_limit=None,
    )
    wall_at(proxy, EVENING - 3600)
    ends: list[float] = []
    start = trio.current_time()

    async def one() -> None:
        async with proxy.connect() as client:  # the warning may come before setupComplete
            await client.send_json(TEXT_SETUP)
            events, last = await until_closed(client)
        assert any("setupComplete" in e for e in events)
        assert last["sessionEnd"]["reason"] == "budget_exhausted"
        ends.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    (line,) = (await usage(proxy))["budgets"]
    # 120 s shared by 20 sessions: each holds 6 s slices, looked at each second.
    assert 2 <= line["used"] <= 2 + 20 * 1 / 60
    assert max(ends) <= 120 / 20 + 2


async def test_a_session_that_ends_early_gives_back_what_it_held(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(budget_per_client=parse_budget("3000 tokens/day"))
    async with proxy.session(TEXT_SETUP) as client:
        await client.send_json({"type": "text", "text": "one"})
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    reports = [orjson.loads(f)["usageMetadata"] for f in frames if has_key("usageMetadata")(f)]
    with trio.fail_after(5):  # the socket's session is over, settled
        await proxy.state.gauges.wait_idle()
    (line,) = (await usage(proxy))["budgets"]  # its 150-token reservation given back
    assert line["used"] == sum(r["totalTokenCount"] for r in reports) > 0


async def test_money_is_counted_by_the_price_table_and_unpriced_use_ends_the_session(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        f'[models."{TEST_MODEL}"]\nprompt = {{ TEXT = 1.0 }}\nresponse = {{ TEXT = 8.0 }}\n'
    )
    proxy = await make_proxy(budget_per_client=parse_budget("0.002 usd/day"), prices_file=prices)
    async with proxy.session(TEXT_SETUP) as client:
        events, code = await talk_until_ended(client)
    end = events[-1]["sessionEnd"]
    assert (code, end["reason"]) == (1000, "budget_exhausted")
    cost = end["stats"]["usage"]["cost_usd"]
    assert 0.002 <= cost <= 0.0025
    with trio.fail_after(5):
        await proxy.state.gauges.wait_idle()
    (line,) = (await usage(proxy))["budgets"]
    assert (line["unit"], line["used"]) == ("usd", cost)

    prices.write_text('[models."another-model"]\nprompt = { TEXT = 1.0 }\n')
    unpriced = await make_proxy(budget_per_client=parse_budget("5 usd/day"), prices_file=prices)
    async with unpriced.session(TEXT_SETUP) as client:
        events, code = await talk_until_ended(client)
    assert events[-1]["sessionEnd"]["reason"] == "budget_exhausted"
    assert sum("usageMetadata" in e for e in events) == 1  # ended at its first report
