"""Every row of the endings table of the browser contract, end to end through real sockets."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, open_websocket_url

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.store import Grant, Limits
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.wsclient import Ended, wait_until

STATS_KEYS = {
    "message_count",
    "audio_chunks_sent",
    "elapsed_seconds",
    "total_token_count",
    "prompt_token_count",
    "response_token_count",
    "usage",
}


def assert_error(ended: Ended, code: str, close_code: int) -> dict[str, object]:
    assert ended.code == close_code, ended
    error = ended.last_event["error"]
    assert error["code"] == code, error
    assert set(error["stats"]) == STATS_KEYS
    return error  # type: ignore[no-any-return]


async def test_time_limit_ends_with_session_end_1000(
    proxy: Proxy, autojump_clock: trio.testing.MockClock
) -> None:
    async with proxy.session(duration=60) as client:
        start = trio.current_time()
        ended = await client.wait_closed()
    assert trio.current_time() - start == pytest.approx(60, abs=0.5)
    assert ended.code == 1000
    end = ended.last_event["sessionEnd"]
    assert end["reason"] == "time_limit"
    assert set(end["stats"]) == STATS_KEYS
    assert end["stats"]["elapsed_seconds"] == pytest.approx(60, abs=0.5)


async def test_upstream_normal_close_ends_with_upstream_closed(proxy: Proxy) -> None:
    proxy.emulator.queue_faults(Faults(close_after=1, close_code=1000, close_reason=""))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "hi"})
        ended = await client.wait_closed()
    assert ended.code == 1000
    assert ended.last_event["sessionEnd"]["reason"] == "upstream_closed"


async def test_shutdown_ends_live_sessions_with_1001_after_the_grace(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(shutdown_grace_seconds=5)
    spare = await proxy.token()
    async with proxy.session() as client:
        proxy.stop.set()
        start = trio.current_time()
        refused = await proxy.http("POST", "/api/auth")
        # A new socket is refused before the upgrade (a proxy in front can try another
        # instance), and its token is not spent.
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with open_websocket_url(proxy.ws_url(spare)):
                pass
        ended = await client.wait_closed()
    assert (rejected.value.status_code, orjson.loads(rejected.value.body or b"")) == (
        503,
        {"error": {"code": "shutting_down", "message": "the server is shutting down"}},
    )
    assert await proxy.state.store.start_session(spare, "after") is not None
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert trio.current_time() - start == pytest.approx(5, abs=0.5)
    assert ended.code == 1001
    assert ended.last_event["sessionEnd"]["reason"] == "shutdown"
    record = proxy.emulator.connections[-1]
    await record.wait_closed()
    assert (record.ended_by, record.close_code) == ("client", 1001)


async def expect_unauthorized(proxy: Proxy, token: str | None) -> None:
    async with open_websocket_url(proxy.ws_url(token)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (4003, "Unauthorized")


async def test_missing_and_unknown_tokens_close_4003(proxy: Proxy) -> None:
    await expect_unauthorized(proxy, None)
    await expect_unauthorized(proxy, "")
    await expect_unauthorized(proxy, "made-up-token")
    assert proxy.emulator.connections == []


async def test_a_token_works_once(proxy: Proxy) -> None:
    token = await proxy.token()
    async with proxy.connect(token) as client:
        await client.send_json(TEXT_SETUP)
        assert await client.recv_json() == {"setupComplete": {}}
    await expect_unauthorized(proxy, token)


async def test_an_expired_token_closes_4003(
    proxy: Proxy, autojump_clock: trio.testing.MockClock
) -> None:
    token = await proxy.token()
    await trio.sleep(30.5)
    await expect_unauthorized(proxy, token)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ({"setup": {"speech_config": {}}}, "Unknown name \"speech_config\" at 'setup'"),
        (
            {"setup": {"generation_config": {"input_audio_transcription": {}}}},
            "at 'setup.generation_config'",
        ),
        ({"setup": {"generation_config": {"temperature": "hot"}}}, "temperature"),
        ({"setup": "yes"}, "must be a JSON object"),
        ({"setup": {}, "extra": 1}, "no other top-level key"),
    ],
)
async def test_bad_setup_is_invalid_setup_1007(
    proxy: Proxy, setup: dict[str, object], fragment: str
) -> None:
    async with proxy.connect() as client:
        await client.send_json(setup)
        ended = await client.wait_closed()
    error = assert_error(ended, "invalid_setup", 1007)
    assert fragment in str(error["message"])
    assert proxy.emulator.connections == []


async def test_a_frame_over_the_limit_is_message_too_big_1009(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_message_bytes=64 * 1024)
    async with proxy.session() as client:
        await client.ws.send_message(bytes(64 * 1024 + 2))
        ended = await client.wait_closed()
    assert_error(ended, "message_too_big", 1009)


@pytest.mark.parametrize(
    "faults",
    [Faults(reject_status=503), Faults(reject_status=429), Faults(close_after=None)],
    ids=["http-503", "http-429", "port-closed"],
)
async def test_unreachable_upstream_is_upstream_unavailable_1013(
    make_proxy: ProxyFactory, emulator: Emulator, faults: Faults
) -> None:
    settings = {}
    if faults.reject_status is None:
        settings["upstream_url"] = "ws://127.0.0.1:9"  # discard port: nothing listens
    else:
        emulator.set_faults(faults)
    proxy = await make_proxy(**settings)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        ended = await client.wait_closed()
    assert_error(ended, "upstream_unavailable", 1013)


@pytest.mark.parametrize(
    "faults",
    [Faults(hang_upgrade=True), Faults(withhold_setup_complete=True)],
    ids=["upgrade-never-answered", "setup-complete-withheld"],
)
async def test_a_silent_upstream_times_out_as_upstream_unavailable(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    faults: Faults,
    autojump_clock: trio.testing.MockClock,
) -> None:
    emulator.set_faults(faults)
    proxy = await make_proxy(setup_timeout_seconds=10)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        start = trio.current_time()
        ended = await client.wait_closed()
    assert trio.current_time() - start == pytest.approx(10, abs=0.5)
    assert_error(ended, "upstream_unavailable", 1013)


async def test_a_refused_key_is_upstream_rejected_1011_without_the_key(
    make_proxy: ProxyFactory, nursery: trio.Nursery
) -> None:
    strict: Emulator = await nursery.start(
        serve_emulator, EmulatorConfig(speed="fast", api_keys=("right-key",))
    )
    proxy = await make_proxy(emulator_=strict, api_key="wrong-key-123")
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        ended = await client.wait_closed()
    error = assert_error(ended, "upstream_rejected", 1011)
    assert "API key not valid" in str(error["message"])
    assert "wrong-key-123" not in str(ended.frames)


async def test_an_unknown_model_is_upstream_rejected(
    make_proxy: ProxyFactory, nursery: trio.Nursery
) -> None:
    picky: Emulator = await nursery.start(
        serve_emulator, EmulatorConfig(speed="fast", models=("models/other",))
    )
    proxy = await make_proxy(emulator_=picky)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        ended = await client.wait_closed()
    error = assert_error(ended, "upstream_rejected", 1011)
    assert "is not found" in str(error["message"])


@pytest.mark.parametrize(
    "faults",
    [Faults(close_after=1), Faults(drop_after=1), Faults(malformed_after=0)],
    ids=["close-1011", "tcp-drop", "garbage"],
)
async def test_upstream_failing_mid_session_is_upstream_error_1011(
    proxy: Proxy, faults: Faults
) -> None:
    proxy.emulator.queue_faults(faults)
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "hi"})
        ended = await client.wait_closed()
    assert_error(ended, "upstream_error", 1011)


async def test_at_capacity_sockets_get_at_capacity_1013(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_sessions=1)
    # POST /api/auth would refuse the second token (tokens count against capacity); a token
    # minted before the first session started is the way a socket can still find the server full.
    roomy = Limits(token_ttl=30, max_sessions=10)
    first_token = await proxy.state.store.admit(Grant(180), roomy)
    second_token = await proxy.state.store.admit(Grant(180), roomy)
    assert isinstance(first_token, str)
    assert isinstance(second_token, str)
    async with proxy.connect(first_token) as first:
        await first.send_json(TEXT_SETUP)
        assert await first.recv_json() == {"setupComplete": {}}
        async with proxy.connect(second_token) as second:
            ended = await second.wait_closed()
        assert proxy.state.gauges.live_sessions == 1
    assert ended.code == 1013
    assert ended.last_event["error"]["code"] == "at_capacity"


async def test_browser_disconnect_closes_upstream_at_once(proxy: Proxy) -> None:
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "hello"})
        await client.recv_json()
        record = proxy.emulator.connections[-1]
        assert proxy.state.gauges.live_sessions == 1
    with trio.fail_after(2):
        await record.wait_closed()
    assert (record.ended_by, record.close_code) == ("client", 1000)
    await wait_until(lambda: proxy.state.gauges.idle)
