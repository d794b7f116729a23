"""Pings, big messages, echo mode at scale, and one bad connection never hurting another."""

from __future__ import annotations

import base64

import pytest
import trio

from tests.wsclient import wait_until

from .helpers import (
    KEYED_PATH,
    TEXT_MODEL,
    audio_message,
    close_reason,
    connect,
    kinds,
    model_audio,
    model_text,
    open_session,
    receive,
    send,
    send_audio,
    silence16,
    start,
    tone16,
    until_turn_complete,
)

UPGRADE = (
    f"GET {KEYED_PATH} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()


async def test_pings_are_answered(nursery: trio.Nursery) -> None:
    emulator = await start(nursery)
    async with connect(emulator) as ws:
        with trio.fail_after(5):
            await ws.ping(b"before setup")
            await open_session(ws)
            await ws.ping(b"after setup")


async def test_messages_above_one_mib_are_accepted(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    frame = base64.b64encode(bytes(2 * 2**20)).decode()
    async with connect(emulator) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig={"responseModalities": ["TEXT"]})
        await send(ws, {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": frame}}})
        await send(ws, {"realtimeInput": {"text": "still alive"}})
        turn = await until_turn_complete(ws)
    assert model_text(turn) == 'You said: "still alive"'
    assert emulator.connections[0].received[0][1]["video"]["data"] == frame


async def test_echo_mode_answers_each_audio_message_at_once_with_the_same_bytes(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, mode="echo")
    chunks = [tone16(0.1), silence16(0.1), b"\x01\x02\x03\x04"]
    async with connect(emulator) as ws:
        await open_session(ws, inputAudioTranscription={})
        for index, chunk in enumerate(chunks):
            await send(ws, audio_message(chunk, snake=index == 1))
            echo = await receive(ws)
            assert kinds([echo]) == ["modelTurn"]
            assert model_audio([echo]) == chunk
        await send(ws, {"realtimeInput": {"text": "ignored in echo mode"}})
        await send(ws, audio_message(b"\x05\x06"))
        assert model_audio([await receive(ws)]) == b"\x05\x06"
    record = emulator.connections[0]
    await record.wait_closed()
    assert (record.received_count, record.sent_count) == (5, 5)
    assert record.received == [("realtimeInput", {"text": "ignored in echo mode"})]
    assert record.sent == [{"setupComplete": {}}]


async def test_two_hundred_concurrent_echo_connections(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, mode="echo")
    chunk = tone16(0.1)
    echoed = 0

    async def client() -> None:
        nonlocal echoed
        async with connect(emulator) as ws:
            await open_session(ws)
            for _ in range(5):
                await send(ws, audio_message(chunk))
                assert model_audio([await receive(ws)]) == chunk
                echoed += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as clients:
            for _ in range(200):
                clients.start_soon(client)
    assert echoed == 1000
    assert len(emulator.connections) == 200
    for record in emulator.connections:
        await record.wait_closed()
    assert emulator.live_count == 0


async def test_a_misbehaving_connection_never_affects_another(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as good:
        await open_session(good, inputAudioTranscription={})
        await send_audio(good, tone16(0.5))
        # Garbage on a second connection, a third that vanishes after the upgrade, a fourth
        # that sends junk instead of HTTP and a fifth that leaves mid-request.
        async with connect(emulator) as bad:
            await bad.send_message("{{{")
            assert (await close_reason(bad)).code == 1007
        vanishing = await trio.open_tcp_stream("127.0.0.1", emulator.port)
        await vanishing.send_all(UPGRADE)
        assert (await vanishing.receive_some()).startswith(b"HTTP/1.1 101 ")
        await vanishing.aclose()  # gone after the upgrade, without a close frame
        junk = await trio.open_tcp_stream("127.0.0.1", emulator.port)
        await junk.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        assert await junk.receive_some() is not None
        await junk.aclose()
        half = await trio.open_tcp_stream("127.0.0.1", emulator.port)
        await half.send_all(b"GET /ws HTTP/1.1\r\n")
        await half.aclose()
        await send_audio(good, silence16(0.6))
        turn = await until_turn_complete(good)
    assert len(model_audio(turn)) == 24_000
    for record in emulator.connections:
        await record.wait_closed()
    assert [r.ended_by for r in emulator.connections] == [
        "client",
        "server",
        "dropped",
        "dropped",
        "dropped",
    ]
    assert emulator.live_count == 0


async def test_without_recording_a_closed_connection_leaves_no_record(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, record_messages=False, speed="fast")
    for _ in range(3):
        async with connect(emulator) as ws:
            await open_session(ws)
    await emulator.wait_for_connections(3)
    await wait_until(lambda: emulator.live_count == 0)
    assert emulator.connections == []


async def test_a_refused_message_with_another_right_behind_it_closes_1007(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = await start(nursery)
    async with connect(emulator) as ws:
        await open_session(ws)
        # Refused: activity detection is automatic.
        end: dict[str, object] = {"realtimeInput": {"activityEnd": {}}}
        await send(ws, end)
        await send(ws, end)  # the reader takes it while the conversation ends the connection
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1007, "Request contains an invalid argument.")
    assert emulator.connections[0].close_code == 1007
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
