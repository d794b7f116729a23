"""Connection lifetime and the injectable faults (trio time: autojump_clock)."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from liveproxy.emulator import Faults
from liveproxy.emulator.transport import MALFORMED_FRAME
from liveproxy.protocol.closes import DEADLINE_EXPIRED

from .helpers import (
    MODEL,
    TEXT_MODEL,
    close_reason,
    connect,
    model_text,
    open_session,
    receive,
    send,
    start,
    until_turn_complete,
)

TEXT = {"model": TEXT_MODEL, "generationConfig": {"responseModalities": ["TEXT"]}}


async def wait_message(ws: WebSocketConnection, limit: float) -> dict[str, object]:
    """The next message, waiting up to ``limit`` trio seconds (longer than ``receive``)."""
    with trio.fail_after(limit):
        message: dict[str, object] = orjson.loads(await ws.get_message())
    return message


async def wait_close(ws: WebSocketConnection, limit: float) -> tuple[int, str | None]:
    reason: CloseReason | None = None
    with trio.fail_after(limit):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            reason = exc.reason
    assert reason is not None
    return reason.code, reason.reason


async def test_lifetime_sends_go_away_then_closes_1011_even_when_idle(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, lifetime_seconds=120, go_away_lead_seconds=50)
    async with connect(emulator) as ws:
        began = trio.current_time()
        await open_session(ws)
        assert await wait_message(ws, 100) == {"goAway": {"timeLeft": "50s"}}
        assert trio.current_time() - began == pytest.approx(70)
        assert await wait_close(ws, 100) == (1011, DEADLINE_EXPIRED)
        assert trio.current_time() - began == pytest.approx(120)
    record = emulator.connections[0]
    await record.wait_closed()
    assert (record.close_code, record.close_reason, record.ended_by) == (
        1011,
        DEADLINE_EXPIRED,
        "server",
    )


async def test_go_away_lead_is_clamped_to_the_lifetime(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, lifetime_seconds=9.5, go_away_lead_seconds=50)
    async with connect(emulator) as ws:
        await open_session(ws)
        assert await wait_message(ws, 1) == {"goAway": {"timeLeft": "9.500s"}}
        assert await wait_close(ws, 20) == (1011, DEADLINE_EXPIRED)


async def test_go_away_fault_brings_the_end_forward(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, speed="fast", faults=Faults(go_away_after=1))
    async with connect(emulator) as ws:
        await open_session(ws, **TEXT)
        await send(ws, {"realtimeInput": {"text": "hi"}})
        began = trio.current_time()
        messages = [await receive(ws) for _ in range(5)]
        assert {"goAway": {"timeLeft": "50s"}} in messages
        assert await wait_close(ws, 100) == (1011, DEADLINE_EXPIRED)
        assert trio.current_time() - began == pytest.approx(50)
    assert model_text(messages) == 'You said: "hi"'  # the triggering message was answered


@pytest.mark.parametrize("after", [0, 2])
async def test_close_fault(nursery: trio.Nursery, after: int) -> None:
    faults = Faults(close_after=after, close_code=4003, close_reason="quota exceeded")
    emulator = await start(nursery, speed="fast", faults=faults)
    async with connect(emulator) as ws:
        await open_session(ws, **TEXT)
        for index in range(after):
            await send(ws, {"realtimeInput": {"text": "hi"}})
            if index < after - 1:
                await until_turn_complete(ws)
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (4003, "quota exceeded")
    record = emulator.connections[0]
    await record.wait_closed()
    assert record.received_count == after
    assert record.ended_by == "server"
    # The message that triggered the close was not answered: one reply for the others.
    assert sum("usageMetadata" in m for m in record.sent) == max(0, after - 1)


async def test_drop_fault_closes_tcp_without_a_close_frame(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, faults=Faults(drop_after=1))
    async with connect(emulator) as ws:
        await open_session(ws)
        await send(ws, {"realtimeInput": {"text": "hi"}})
        reason = await close_reason(ws)
    assert reason.code == 1006
    record = emulator.connections[0]
    await record.wait_closed()
    assert (record.close_code, record.ended_by) == (1006, "dropped")


async def test_stall_fault_stops_all_io_until_the_lifetime_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(
        nursery, faults=Faults(stall_after=1), lifetime_seconds=300, go_away_lead_seconds=50
    )
    async with connect(emulator) as ws:
        await open_session(ws, **TEXT)
        await send(ws, {"realtimeInput": {"text": "hi"}})
        with trio.move_on_after(10) as no_pong:
            await ws.ping(b"are you there")
        assert no_pong.cancelled_caught
        # No goAway from a stalled connection; at the end of its lifetime it is dropped.
        assert await wait_close(ws, 400) == (1006, None)
    record = emulator.connections[0]
    await record.wait_closed()
    assert record.ended_by == "dropped"
    assert record.received_count == 1
    assert record.sent == [{"setupComplete": {}}]


async def test_malformed_fault_sends_one_bad_frame_then_carries_on(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast", faults=Faults(malformed_after=0))
    async with connect(emulator) as ws:
        await open_session(ws, **TEXT)
        assert await ws.get_message() == MALFORMED_FRAME.encode()
        await send(ws, {"realtimeInput": {"text": "hi"}})
        turn = await until_turn_complete(ws)
    assert model_text(turn) == 'You said: "hi"'


async def test_setup_complete_delay_is_trio_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, faults=Faults(setup_complete_delay=7.5))
    async with connect(emulator) as ws:
        began = trio.current_time()
        await open_session(ws)
        assert trio.current_time() - began == pytest.approx(7.5)


async def test_withheld_setup_complete_keeps_reading(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(
        nursery,
        faults=Faults(withhold_setup_complete=True),
        lifetime_seconds=60,
        go_away_lead_seconds=10,
    )
    async with connect(emulator) as ws:
        await send(ws, {"setup": {"model": MODEL}})
        await send(ws, {"realtimeInput": {"text": "hello?"}})
        # Nothing at all comes back, not even goAway; the lifetime still ends it.
        assert await wait_close(ws, 100) == (1011, DEADLINE_EXPIRED)
    record = emulator.connections[0]
    assert record.received == [("realtimeInput", {"text": "hello?"})]
    assert record.sent == []


async def test_repeat_usage_sends_each_turns_report_again_alone(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    emulator.set_faults(Faults(repeat_usage=True))
    async with connect(emulator) as ws:
        await open_session(ws, **TEXT)
        await send(ws, {"realtimeInput": {"text": "hello"}})
        turn = await until_turn_complete(ws)
        again = await receive(ws)
    assert again == {"serverContent": {}, "usageMetadata": turn[-1]["usageMetadata"]}
    assert turn[-1]["usageMetadata"]["promptTokenCount"] > 0
