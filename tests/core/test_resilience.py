"""Sessions that survive Gemini: goAway, dropped connections, rejected handles, barge-in."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import wrap_client_stream

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.protocol.b64 import decode_b64
from tests import pcm
from tests.conftest import AUDIO_SETUP, Proxy, ProxyFactory
from tests.wsclient import BrowserClient, Frame, has_key, texts, wait_until


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


@asynccontextmanager
async def reluctant_reader(proxy: Proxy, setup: dict[str, Any]) -> AsyncIterator[BrowserClient]:
    """A browser with a tiny receive window that reads only when the test says so.

    trio-websocket keeps one message in its queue and then stops reading the socket; with a
    4 KiB receive buffer, the proxy soon finds its writes blocked.
    """
    token = await proxy.token()
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", proxy.port))
    stream = trio.SocketStream(sock)
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery, stream, f"127.0.0.1:{proxy.port}", f"/ws?token={token}", message_queue_size=1
        )
        client = BrowserClient(ws)
        await client.send_json(setup)
        assert "setupComplete" in await client.recv_json()
        try:
            yield client
        finally:
            await trio.aclose_forcefully(ws)
            nursery.cancel_scope.cancel()


LONG_AUDIO_REPLY = {"type": "text", "text": "x" * 3000}  # 150 s of tone, about 7 MB at 24 kHz


async def test_a_browser_that_stops_reading_is_cut_off_and_its_neighbour_keeps_its_pace(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(browser_queue_bytes=256 * 1024)
    async with proxy.session() as healthy, reluctant_reader(proxy, AUDIO_SETUP) as slow:
        await slow.send_json(LONG_AUDIO_REPLY)
        slow_upstream = proxy.emulator.connections[-1]
        # The healthy session keeps answering while the slow one backs up and is cut off.
        turn_times = []
        while not slow_upstream.closed.is_set():
            start = trio.current_time()
            await healthy.send_json({"type": "text", "text": "still quick?"})
            await healthy.recv_until(has_key("serverContent", "turnComplete"))
            turn_times.append(trio.current_time() - start)
            assert len(turn_times) < 500, "the slow browser was never cut off"
        assert slow_upstream.ended_by == "client"  # the proxy closed it: no session outlived
        await wait_until(lambda: proxy.state.gauges.live_sessions == 1)
        assert max(turn_times) < 0.5
        # When the slow browser reads again it finds the error and the close code.
        ended = await slow.wait_closed()
    assert ended.code == 1008
    assert ended.last_event["error"]["code"] == "slow_client"
    assert sum(len(f) for f in ended.frames if isinstance(f, bytes)) < 7_000_000


async def test_interrupted_drops_the_audio_still_queued_for_the_browser(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(browser_queue_bytes=64 * 1024 * 1024)
    async with reluctant_reader(proxy, AUDIO_SETUP) as slow:
        await slow.send_json(LONG_AUDIO_REPLY)
        upstream = proxy.emulator.connections[-1]
        await wait_until(lambda: upstream.sent_count > 600)  # about 3 MB of the answer so far
        for frame in pcm.frames(pcm.speech(0.5) + pcm.silence(0.6)):
            await slow.ws.send_message(frame)  # the user talks over the answer
        frames = await slow.recv_until(has_key("serverContent", "interrupted"))
    played = sum(len(f) for f in frames if isinstance(f, bytes))
    sent = sum(
        len(decode_b64(part["inlineData"]["data"]))
        for message in upstream.sent
        if "serverContent" in message
        for part in message["serverContent"].get("modelTurn", {}).get("parts", [])
        if "inlineData" in part
    )
    assert sent > 2_500_000
    assert played < sent / 2  # most of the queued answer never reached the browser


async def test_an_upstream_that_stops_answering_pings_is_replaced(
    make_proxy: ProxyFactory, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(upstream_ping_interval_seconds=30, upstream_pong_timeout_seconds=60)
    emulator.queue_faults(Faults(stall_after=2))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        start = trio.current_time()
        await client.send_json({"type": "text", "text": "into the void"})
        assert await client.recv_json() == {"sessionStatus": {"state": "reconnecting"}}
        # A ping within 30 s, unanswered for 60 s, then up to 1 s closing the dead connection.
        assert 60 <= trio.current_time() - start <= 91.5
        assert await client.recv_json() == {"sessionStatus": {"state": "resumed"}}
        answer = await client.recv_until(has_key("serverContent", "turnComplete"))
    assert 'You said: "into the void"' in "".join(texts(answer))
    assert emulator.connections[1].resumed_handle is not None
    # The stalled emulator connection reads nothing, so it notices our close only when its
    # lifetime ends (the fixture then checks that nothing is left open).
    await trio.sleep(600)


async def test_slow_pongs_within_the_timeout_keep_the_connection(
    make_proxy: ProxyFactory, emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(upstream_ping_interval_seconds=5, upstream_pong_timeout_seconds=60)
    async with proxy.session(duration=120) as client:
        ended = await client.wait_closed()
    assert ended.last_event["sessionEnd"]["reason"] == "time_limit"
    assert len(emulator.connections) == 1


async def test_the_kernel_frees_the_socket_of_a_browser_that_never_reads_again(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(browser_queue_bytes=256 * 1024, browser_timeout_seconds=1)
    gauges = proxy.state.gauges
    async with reluctant_reader(proxy, AUDIO_SETUP) as slow:
        await slow.send_json(LONG_AUDIO_REPLY)
        await wait_until(lambda: gauges.live_sessions == 0)  # slow_client ended the session
        # Its last frames wait in a socket write the proxy cannot cancel, until the kernel
        # gives up on the silent receive window after BROWSER_TIMEOUT_SECONDS.
        assert gauges.browser_connections == 1
        start = trio.current_time()
        await wait_until(lambda: gauges.browser_connections == 0)
        assert 0.5 <= trio.current_time() - start <= 4.5
        ended = await slow.wait_closed()
    assert ended.code == 1006  # reset by the proxy's kernel: the close frame never got out
