"""UpstreamLink: one ordered stream of browser messages over successive upstream connections."""

from __future__ import annotations

from typing import cast

import pytest
import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from liveproxy.core.link import UpstreamLink


class FakeConnection:
    """Records what it is sent; can be told to fail, or to block until released."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = False
        self.gate: trio.Event | None = None

    async def send_message(self, message: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.closed:
            raise ConnectionClosed(CloseReason(1006, None))
        self.sent.append(message)


def ws(fake: FakeConnection) -> WebSocketConnection:
    return cast(WebSocketConnection, fake)


async def test_messages_sent_before_a_connection_go_out_first_and_in_order() -> None:
    link = UpstreamLink(max_buffered_bytes=1000)
    await link.send("a")
    await link.send("b")
    first = FakeConnection()
    await link.attach(ws(first))
    await link.send("c")
    assert first.sent == ["a", "b", "c"]
    assert link.buffered_bytes == 0


async def test_a_full_buffer_holds_the_producer_until_a_connection_drains_it() -> None:
    link = UpstreamLink(max_buffered_bytes=10)
    done: list[str] = []

    async def produce(nursery: trio.Nursery) -> None:
        for message in ("12345", "67890", "abcde"):
            await link.send(message)
            done.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert done == ["12345", "67890"]  # the third would pass the bound: it waits
        connection = FakeConnection()
        await link.attach(ws(connection))
    assert connection.sent == ["12345", "67890", "abcde"]


async def test_a_connection_failing_under_a_write_keeps_the_message_for_the_next() -> None:
    link = UpstreamLink(max_buffered_bytes=1000)
    old = FakeConnection()
    await link.attach(ws(old))
    await link.send("a")
    old.closed = True
    await link.send("b")  # fails on the old connection: stays queued
    await link.send("c")
    new = FakeConnection()
    await link.attach(ws(new))
    assert (old.sent, new.sent) == (["a"], ["b", "c"])


async def test_detach_waits_for_the_write_in_flight() -> None:
    link = UpstreamLink(max_buffered_bytes=1000)
    old = FakeConnection()
    await link.attach(ws(old))
    old.gate = trio.Event()
    detached = trio.Event()

    async def detach() -> None:
        await link.detach()
        detached.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.send, "in flight")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(detach)
        await trio.testing.wait_all_tasks_blocked()
        assert not detached.is_set()
        await link.send("after detach")  # buffered, not sent on the old connection
        old.gate.set()
    assert detached.is_set()
    assert old.sent == ["in flight"]
    new = FakeConnection()
    await link.attach(ws(new))
    assert new.sent == ["after detach"]


async def test_after_a_drop_turn_messages_since_the_handle_are_replayed_first() -> None:
    link = UpstreamLink(max_buffered_bytes=1000)
    old = FakeConnection()
    await link.attach(ws(old))
    await link.send("before handle", replayable=True)
    link.handle_received()
    await link.send("audio")
    await link.send("turn", replayable=True)
    await link.detach()
    await link.send("while away")
    assert link.replay_after_drop() == 1
    new = FakeConnection()
    await link.attach(ws(new))
    assert new.sent == ["turn", "while away"]


@pytest.mark.parametrize("count", [1, 40])
async def test_replay_is_bounded(count: int) -> None:
    link = UpstreamLink(max_buffered_bytes=10_000)
    await link.attach(ws(FakeConnection()))
    for i in range(count):
        await link.send(f"m{i}", replayable=True)
    await link.detach()
    assert link.replay_after_drop() == min(count, UpstreamLink.REPLAY_LIMIT)
