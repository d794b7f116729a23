"""A ``goAway`` switch loses nothing in flight: make before break, on real sockets.

The upstream here answers every audio frame at once (the same bytes back as the model's audio,
then ``turnComplete`` and a new handle), sends ``goAway`` shortly before it closes each
connection, and closes every connection after a fraction of a second: three sessions switch
connections several times while they stream, and every frame's answer must reach its browser,
once, in order, the browser's socket open throughout. (Before the switch was made before the
break, the proxy stopped reading the old connection when it switched: the answers to the last
frames sent to it were lost in about half the runs.)
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.upstream.credentials import ApiKey
from liveproxy.upstream.target import UpstreamTarget
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.wsclient import has_key

SESSIONS = 3
FRAMES = 40
#: A frame every 20 ms (a microphone sends one every 20 to 100 ms); a connection lives 1.2 s,
#: its goAway 800 ms before its end (Gemini's lead is about 50 s: here time enough to open the
#: new connection even on a machine busy with other tests; 400 ms was not, once in ~100 runs).
PACE = 0.02
LIFETIME = 1.2
GO_AWAY_LEAD = 0.8


async def echo_upstream(request: WebSocketRequest, connections: list[int]) -> None:
    """One connection: each audio frame answered at once, as a turn with a handle; ``goAway``
    then close 1011 on its lifetime."""
    ws = await request.accept()
    connections.append(1)
    answered = 0

    async def lifetime(scope: trio.CancelScope) -> None:
        await trio.sleep(LIFETIME - GO_AWAY_LEAD)
        await ws.send_message(orjson.dumps({"goAway": {"timeLeft": f"{GO_AWAY_LEAD}s"}}))
        await trio.sleep(GO_AWAY_LEAD)
        await ws.aclose(1011, "Deadline expired before operation could complete.")
        scope.cancel()

    try:
        await ws.get_message()  # the setup
        await ws.send_message(b'{"setupComplete":{}}')
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lifetime, nursery.cancel_scope)
            while True:
                message = orjson.loads(await ws.get_message())
                audio = message.get("realtimeInput", {}).get("audio")
                if audio is None:
                    continue
                answered += 1
                part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio["data"]}}
                await ws.send_message(
                    orjson.dumps({"serverContent": {"modelTurn": {"parts": [part]}}})
                )
                await ws.send_message(b'{"serverContent":{"turnComplete":true}}')
                update = {"newHandle": f"h{answered}", "resumable": True}
                await ws.send_message(orjson.dumps({"sessionResumptionUpdate": update}))
    except* ConnectionClosed:
        pass


def frame(session: int, seq: int) -> bytes:
    """640 bytes of PCM that say which session and frame they are."""
    return struct.pack("<HH", session, seq) * 160


async def stream(proxy: Proxy, session: int, answers: dict[int, list[int]]) -> None:
    """Send :data:`FRAMES` frames in real time; collect the answers until all came."""
    got = answers.setdefault(session, [])
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()

        async def read() -> None:
            while len(got) < FRAMES:
                data = await client.recv()
                if isinstance(data, bytes):
                    owner, seq = struct.unpack("<HH", data[:4])
                    assert owner == session
                    got.append(seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for seq in range(FRAMES):
                await client.ws.send_message(frame(session, seq))
                await trio.sleep(PACE)
        assert client.ws.closed is None  # the browser never noticed


@pytest.mark.parametrize("run", range(20))
async def test_a_switch_every_half_second_loses_and_reorders_no_answer(
    make_proxy: ProxyFactory, nursery: trio.Nursery, run: int
) -> None:
    connections: list[int] = []
    server = await nursery.start(
        partial(serve_websocket, partial(echo_upstream, connections=connections)),
        "127.0.0.1",
        0,
        None,
    )
    target = UpstreamTarget(
        url=f"ws://127.0.0.1:{server.port}/ws", model="m", credentials=ApiKey("k"), ping_interval=0
    )
    proxy = await make_proxy(target=target, resume_window_seconds=0)
    answers: dict[int, list[int]] = {}
    with trio.move_on_after(20) as waited:
        async with trio.open_nursery() as sessions:
            for session in range(SESSIONS):
                sessions.start_soon(stream, proxy, session, answers)
    assert not waited.cancelled_caught, {
        s: sorted(set(range(FRAMES)) - set(a)) for s, a in answers.items()
    }
    for session in range(SESSIONS):
        assert answers[session] == list(range(FRAMES)), session
    assert len(connections) >= SESSIONS * 2  # every session switched at least once
    assert proxy.state.gauges.reconnects >= SESSIONS


async def audio_of_a_long_turn(proxy: Proxy, emulator: Emulator) -> tuple[int, int]:
    """Two typed turns (the second answered with a tone of 5 s); the bytes of audio the browser
    got for the second turn, and how many upstream connections the session used."""
    before = len(emulator.connections)
    async with proxy.session(AUDIO_ONLY) as client:
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": LONG})
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
        assert client.ws.closed is None
    return sum(len(f) for f in frames if isinstance(f, bytes)), len(emulator.connections) - before


#: A turn whose spoken answer is a tone of 50 ms per character: about 5 s.
LONG = "a long answer please " * 4 + "x" * 8
AUDIO_ONLY: dict[str, Any] = {"setup": {"generation_config": {"response_modalities": ["AUDIO"]}}}


async def test_a_switch_mid_turn_delivers_the_whole_turn(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator: Emulator = await nursery.start(
        serve_emulator, EmulatorConfig(speed="realtime", go_away_lead_seconds=6.0)
    )
    proxy = await make_proxy(emulator_=emulator)
    whole, connections = await audio_of_a_long_turn(proxy, emulator)
    assert connections == 1
    assert whole >= 4.5 * 48_000
    # goAway right after the long turn's request: the course waits for the turn to end until 5 s
    # before the deadline (1 s in), then switches mid-turn; the old connection is read on until
    # the turn is complete (at 5 s, before its close at 6 s).
    emulator.queue_faults(Faults(go_away_after=2))
    switched, connections = await audio_of_a_long_turn(proxy, emulator)
    assert connections == 2
    assert switched == whole
