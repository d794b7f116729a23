"""Transparent resumption on Vertex, end to end: the proxy asks for it, numbers what it sends
upstream, and after a drop or a ``goAway`` switch sends again exactly what the resumed
connection lacks, audio included, so the conversation is the one an uninterrupted run has.

Against the real emulator (real-time pacing, trio's autojump clock) over real sockets, with a
Vertex target whose OAuth credentials are a stand-in.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from liveproxy.config import DEFAULT_MODEL, Config
from liveproxy.contract.translate import AudioAligner, translate_upstream
from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.emulator.record import ConnectionRecord
from liveproxy.emulator.store import SessionState
from liveproxy.upstream.credentials import GoogleAuth
from liveproxy.upstream.startup import google_target
from tests.conftest import Proxy, ProxyFactory
from tests.emulator.helpers import silence16, tone16
from tests.upstream.test_backends import StandInCredentials
from tests.wsclient import BrowserClient, Frame, has_key

VERTEX = {
    "api_key": None,
    "project_id": "proj-1",
    "location": "europe-west4",
    "model": DEFAULT_MODEL,
}
#: With ``NO_INTERRUPTION`` answers play out and turns queue: nothing depends on timing, so two
#: runs that deliver the same input upstream end with the same conversation.
SETUP: dict[str, Any] = {
    "setup": {
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "realtimeInputConfig": {"activityHandling": "NO_INTERRUPTION"},
    }
}
#: One browser frame every 100 ms, like a microphone.
PACE = 0.1


def script() -> list[Frame]:
    """What the browser sends: three utterances in 100 ms PCM frames (the second starts while
    the first answer plays, so a handle is issued in the middle of it), a Gemini-native text
    turn, silence, a typed text turn, silence. Upstream message n is ``script()[n - 1]``.

    A typed text turn (``clientContent``) interrupts even with ``NO_INTERRUPTION``: the silence
    before it leaves a resumed conversation time to answer what the drop held up."""
    pcm = (
        tone16(0.5)
        + silence16(0.6)
        + tone16(1.0, amplitude=5000)
        + silence16(0.6)
        + tone16(0.7, amplitude=7000)
        + silence16(0.6)
    )
    speech: list[Frame] = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    native_text = orjson.dumps({"realtimeInput": {"text": "and a text"}}).decode()
    typed_text = orjson.dumps({"type": "text", "text": "bye"}).decode()
    return [*speech, native_text, *silence(5.0), typed_text, *silence(1.5)]


def silence(seconds: float) -> list[Frame]:
    return [silence16(0.1) for _ in range(round(seconds / 0.1))]


async def vertex_proxy(make_proxy: ProxyFactory, emulator: Emulator, url: str = "") -> Proxy:
    """A proxy whose upstream is Vertex AI at ``url`` (default: ``emulator``'s)."""
    url = url or emulator.url
    config = Config(upstream_url=url, **VERTEX)  # type: ignore[arg-type]
    credentials = StandInCredentials()
    credentials.refresh(None)  # a valid token already: no refresh thread under the autojump clock
    target = await google_target(config, GoogleAuth(credentials))
    return await make_proxy(target=target, emulator_=emulator, upstream_url=url, **VERTEX)


async def with_latency(nursery: trio.Nursery, emulator: Emulator, delay: float) -> str:
    """A TCP relay in front of ``emulator`` that delays every byte by ``delay`` seconds each way,
    like a network: a handle then arrives after the proxy sent messages it does not include.
    Returns its ``ws://`` URL; an end of either direction ends the relayed connection."""

    async def one_way(
        src: trio.SocketStream, dst: trio.SocketStream, relayed: trio.CancelScope
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def deliver() -> None:
            async with receive:
                async for at, data in receive:
                    await trio.sleep_until(at)
                    await dst.send_all(data)

        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async with trio.open_nursery() as pipe:
                pipe.start_soon(deliver)
                async with send:
                    while data := await src.receive_some():
                        send.send_nowait((trio.current_time() + delay, data))
        relayed.cancel()

    async def relay(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", emulator.port)
        with trio.CancelScope() as relayed:
            async with trio.open_nursery() as both:
                both.start_soon(one_way, client, server, relayed)
                both.start_soon(one_way, server, client, relayed)
        await trio.aclose_forcefully(server)
        await trio.aclose_forcefully(client)

    listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def realtime_emulator(nursery: trio.Nursery) -> Emulator:
    emulator: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="realtime"))
    return emulator


async def collect(client: BrowserClient, into: list[Frame]) -> None:
    while True:
        into.append(await client.recv())


async def converse(
    proxy: Proxy, fault: Faults | None = None
) -> tuple[list[ConnectionRecord], list[Frame]]:
    """Play :func:`script` through the proxy (the first upstream connection taking ``fault``);
    return this run's upstream connections and what the browser received."""
    emulator = proxy.emulator
    before = len(emulator.connections)
    if fault is not None:
        emulator.queue_faults(fault)
    received: list[Frame] = []
    async with proxy.session(SETUP) as client:
        async with trio.open_nursery() as reading:
            reading.start_soon(collect, client, received)
            for frame in script():
                await client.ws.send_message(frame)
                await trio.sleep(PACE)
            await trio.sleep(2.0)  # the last answer plays out
            reading.cancel_scope.cancel()
        assert client.ws.closed is None  # the browser never saw a failure
    records = emulator.connections[before:]
    await records[-1].wait_closed()
    return records, received


def record_of(records: list[ConnectionRecord]) -> tuple[Any, ...]:
    """The emulator's record of the conversation, as its last connection left it."""
    state: SessionState | None = records[-1].conversation
    assert state is not None
    return (
        state.turns,
        state.heard,
        state.audio_bytes,
        state.audio_sha256,
        state.context,
        state.calls,
    )


def statuses(frames: list[Frame]) -> list[str]:
    return [
        orjson.loads(f)["sessionStatus"]["state"]
        for f in frames
        if isinstance(f, str) and "sessionStatus" in f
    ]


def resumed_index(first: ConnectionRecord, second: ConnectionRecord) -> int:
    """The index of the last message of ``first`` that the handle ``second`` resumed includes
    (on a switch, ``first`` may have issued later handles while ``second`` was opened)."""
    (issued,) = [h for h in first.issued if h.handle == second.resumed_handle]
    return issued.last_consumed


def assert_replayed_exactly(
    first: ConnectionRecord, second: ConnectionRecord, expected: list[ConnectionRecord]
) -> None:
    """``second`` resumed a handle of ``first`` (the latest it had when it decided to move) and
    got exactly what followed its index, then the rest: upstream, the two connections add up
    to the uninterrupted run's input."""
    covered = resumed_index(first, second)
    assert second.resumed_after == covered
    assert second.session_id == first.session_id
    missed = first.received[covered:]
    assert second.received[: len(missed)] == missed
    (uninterrupted,) = expected
    assert first.received[:covered] + second.received == uninterrupted.received
    assert record_of([first, second]) == record_of(expected)


#: Each way, between the proxy and the emulator: none, and a network's.
LATENCIES = pytest.mark.parametrize("latency", [0.0, 0.15], ids=["local", "150ms"])


async def proxy_with_latency(
    make_proxy: ProxyFactory, nursery: trio.Nursery, latency: float
) -> Proxy:
    emulator = await realtime_emulator(nursery)
    url = await with_latency(nursery, emulator, latency) if latency else emulator.url
    return await vertex_proxy(make_proxy, emulator, url)


@LATENCIES
@pytest.mark.parametrize("drop_after", [17, 19, 24, 31, 42, 49, 74, 93])
async def test_a_drop_on_vertex_loses_nothing_the_conversation_is_the_uninterrupted_one(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    drop_after: int,
    latency: float,
) -> None:
    proxy = await proxy_with_latency(make_proxy, nursery, latency)
    expected, _ = await converse(proxy)
    assert record_of(expected)[:2] == (
        5,
        ["[speech 0.50 s]", "[speech 1.10 s]", "[speech 0.80 s]", "and a text", "bye"],
    )
    assert len(expected[0].received) == len(script())

    records, received = await converse(proxy, Faults(drop_after=drop_after))
    first, second = records
    assert (first.ended_by, first.received_count) == ("dropped", drop_after)
    assert first.issued, "the drop came after the first handle"
    assert statuses(received) == ["reconnecting", "resumed"]
    assert_replayed_exactly(first, second, expected)


#: Where a ``goAway`` leaves messages after the index on the old connection: mid-utterance and
#: in silence; and (40) with the text turn queued behind an answer, where the switch waits past
#: that answer's end for a handle that includes it (whether audio then follows the index depends
#: on the latency: None).
@LATENCIES
@pytest.mark.parametrize(
    ("go_away_after", "audio_after_index"), [(17, True), (24, True), (40, None), (62, True)]
)
async def test_a_go_away_switch_sends_again_what_followed_the_index(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    go_away_after: int,
    audio_after_index: bool | None,
    latency: float,
) -> None:
    proxy = await proxy_with_latency(make_proxy, nursery, latency)
    expected, _ = await converse(proxy)
    records, received = await converse(proxy, Faults(go_away_after=go_away_after))
    first, second = records
    assert first.ended_by == "client"  # the proxy moved, at a turn boundary
    # Audio the old connection consumed after the index is not in the handle's state.
    after_index = first.received[resumed_index(first, second) : first.consumed]
    has_audio = any(kind == "realtimeInput" and "audio" in body for kind, body in after_index)
    assert audio_after_index in (None, has_audio)
    assert statuses(received) == ["reconnecting", "resumed"]
    assert_replayed_exactly(first, second, expected)


async def test_vertex_asks_for_transparent_resumption_and_the_developer_api_does_not(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    developer = await make_proxy()
    async with developer.session() as client:
        await client.send_json({"type": "text", "text": "hi"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
    plain = emulator.connections[-1]
    assert plain.setup is not None
    assert plain.setup["sessionResumption"] == {}
    assert not plain.transparent

    vertex = await vertex_proxy(make_proxy, emulator)
    emulator.queue_faults(Faults(drop_after=2))
    async with vertex.session(SETUP) as client:  # Vertex's Live models speak audio only
        await client.send_json({"type": "text", "text": "first"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"type": "text", "text": "second"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
    first, second = emulator.connections[-2:]
    assert first.setup is not None
    assert second.setup is not None
    assert first.setup["sessionResumption"] == {"transparent": True}
    assert first.transparent
    assert first.api == "vertex"
    handle = first.issued[-1].handle
    assert second.setup["sessionResumption"] == {"handle": handle, "transparent": True}
    assert second.received == first.received[1:]  # "second" once more, and nothing else
    assert second.conversation is not None
    assert second.conversation.heard == ["first", "second"]


@pytest.mark.parametrize(
    ("index", "parsed"),
    [
        (None, 0),  # left out: proto3 JSON omits 0
        ('"42"', 42),  # int64 as proto3 JSON writes it
        ("42", 42),
        ('"9223372036854775807"', 2**63 - 1),
        ('"9223372036854775808"', None),
        ("9223372036854775808", None),
        ("-1", None),
        ('"-1"', None),
        ('"1e3"', None),
        ("4.0", None),
        ("true", None),
        ('"\u0664\u0662"', None),  # Arabic-Indic digits: int() would take them
        ('"' + "9" * 5000 + '"', None),
        ("null", None),
        ("[1]", None),
        ('""', None),
    ],
)
def test_the_index_is_read_from_a_number_or_a_string_and_nothing_else(
    index: str | None, parsed: int | None
) -> None:
    field = "" if index is None else f',"lastConsumedClientMessageIndex":{index}'
    raw = '{"sessionResumptionUpdate":{"newHandle":"h","resumable":true' + field + "}}"
    event = translate_upstream(raw.encode(), AudioAligner())
    assert (event.resumption_handle, event.consumed_index) == ("h", parsed)
    assert event.frames == []


def test_an_update_without_a_resumable_handle_carries_no_index() -> None:
    raw = b'{"sessionResumptionUpdate":{"lastConsumedClientMessageIndex":"7"}}'
    event = translate_upstream(raw, AudioAligner())
    assert (event.resumption_handle, event.consumed_index) == (None, None)
