"""Sessions that survive Gemini: goAway, dropped connections, rejected handles, barge-in."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
import trio

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.protocol.b64 import decode_b64
from tests import pcm
from tests.conftest import AUDIO_SETUP, ProxyFactory
from tests.wsclient import BrowserClient, Frame, has_key


async def start_emulator(nursery: trio.Nursery, **settings: Any) -> Emulator:
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(**settings))
    return emulator


def conversation_audio(seconds: int) -> list[bytes]:
    """100 ms frames: 1 s of speech then 2 s of silence (time for the answer), repeated."""
    audio = b"".join(
        pcm.speech(1.0, hz=200 + 20 * i) + pcm.silence(2.0) for i in range(seconds // 3)
    )
    return pcm.frames(audio)


async def stream(client: BrowserClient, frames: list[bytes]) -> None:
    for frame in frames:
        await client.ws.send_message(frame)
        await trio.sleep(0.1)


async def collect(client: BrowserClient, into: list[Frame]) -> None:
    while True:
        into.append(await client.recv())


def statuses(frames: list[Frame]) -> list[str]:
    return [
        orjson.loads(f)["sessionStatus"]["state"]
        for f in frames
        if isinstance(f, str) and "sessionStatus" in f
    ]


def upstream_audio(emulator: Emulator) -> bytes:
    return b"".join(
        decode_b64(body["audio"]["data"])
        for record in emulator.connections
        for kind, body in record.received
        if kind == "realtimeInput" and "audio" in body
    )


def issued_handles(emulator: Emulator, index: int) -> list[str]:
    return [
        m["sessionResumptionUpdate"]["newHandle"]
        for m in emulator.connections[index].sent
        if "sessionResumptionUpdate" in m and m["sessionResumptionUpdate"].get("resumable")
    ]


async def test_a_30s_conversation_survives_three_go_aways_without_the_browser_noticing(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # goAway 9 s into each connection: three of them in a 30 s conversation.
    emulator = await start_emulator(
        nursery, speed="realtime", lifetime_seconds=14, go_away_lead_seconds=5
    )
    proxy = await make_proxy(emulator_=emulator)
    frames = conversation_audio(30)
    received: list[Frame] = []
    async with proxy.session(AUDIO_SETUP) as client:
        async with trio.open_nursery() as reading:
            reading.start_soon(collect, client, received)
            await stream(client, frames)
            await trio.sleep(2)  # the last answer
            reading.cancel_scope.cancel()
        assert client.ws.closed is None  # still open: the browser never noticed
    records = emulator.connections
    assert len(records) == 4
    assert statuses(received) == ["reconnecting", "resumed"] * 3
    assert len({r.session_id for r in records}) == 1  # one conversation throughout
    for index, (before, after) in enumerate(itertools.pairwise(records)):
        assert after.resumed_handle in issued_handles(emulator, index)
        assert before.ended_by == "client"  # the proxy closed each old connection itself
    assert upstream_audio(emulator) == b"".join(frames)  # nothing lost, nothing reordered
    usages = [
        orjson.loads(f)["usageMetadata"]["totalTokenCount"]
        for f in received
        if isinstance(f, str) and "usageMetadata" in f
    ]
    assert len(usages) == 10  # a turn every 3 s, each answered, none lost to a switch
    assert usages == sorted(usages)  # the resumed conversation keeps counting
    assert proxy.state.gauges.reconnects == 3


async def test_an_upstream_drop_with_a_handle_resumes(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    proxy = await make_proxy()
    emulator.queue_faults(Faults(drop_after=2))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": "second, dropped"})
        status = await client.recv_until(has_key("sessionStatus"))
        assert orjson.loads(status[-1]) == {"sessionStatus": {"state": "reconnecting"}}
        assert await client.recv_json() == {"sessionStatus": {"state": "resumed"}}
        # The message upstream dropped on is sent again on the new connection.
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": "third"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
    first, second = emulator.connections
    assert first.ended_by == "dropped"
    assert second.resumed_handle is not None
    assert second.session_id == first.session_id
    texts = [b["turns"][0]["parts"][0]["text"] for _, b in second.received]
    assert texts == ["second, dropped", "third"]


async def test_a_drop_before_any_handle_ends_with_upstream_error(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    proxy = await make_proxy()
    emulator.queue_faults(Faults(drop_after=1))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "hello?"})
        ended = await client.wait_closed()
    assert ended.code == 1011
    assert ended.last_event["error"]["code"] == "upstream_error"
    assert len(emulator.connections) == 1


async def test_a_rejected_handle_ends_the_session_as_upstream_error(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start_emulator(nursery, speed="fast", handle_ttl_seconds=5)
    proxy = await make_proxy(emulator_=emulator)
    emulator.queue_faults(Faults(drop_after=2))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await trio.sleep(6)  # the only handle expires
        await client.send_json({"type": "text", "text": "second"})
        ended = await client.wait_closed()
    assert ended.code == 1011
    error = ended.last_event["error"]
    assert error["code"] == "upstream_error"
    assert "session not found" in error["message"]
    assert [f for f in ended.frames if isinstance(f, str) and "sessionStatus" in f] == [
        '{"sessionStatus":{"state":"reconnecting"}}'
    ]
    assert emulator.connections[1].close_code == 1008


async def test_resume_retries_with_back_off_then_gives_up(
    make_proxy: ProxyFactory, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(reconnect_attempts=3)
    emulator.queue_faults(
        Faults(drop_after=2),
        Faults(reject_status=503),
        Faults(reject_status=503),
        Faults(reject_status=503),
    )
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": "second"})
        start = trio.current_time()
        ended = await client.wait_closed()
    assert trio.current_time() - start == pytest.approx(0.5 + 1.0, abs=0.1)
    assert ended.last_event["error"]["code"] == "upstream_error"
    assert "after 3 attempts" in ended.last_event["error"]["message"]
    assert len(emulator.connections) == 4


async def test_a_quota_close_is_not_retried(make_proxy: ProxyFactory, emulator: Emulator) -> None:
    proxy = await make_proxy()
    emulator.queue_faults(
        Faults(close_after=2, close_reason="You exceeded your current quota, please check")
    )
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": "second"})
        ended = await client.wait_closed()
    assert ended.last_event["error"]["code"] == "upstream_error"
    assert "quota" in ended.last_event["error"]["message"]
    assert len(emulator.connections) == 1
