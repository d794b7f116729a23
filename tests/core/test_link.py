"""UpstreamLink: one ordered stream of browser messages over successive upstream connections."""

from __future__ import annotations

import logging
from typing import cast

import pytest
import trio
import trio.testing

from liveproxy.core.footprint import footprint
from liveproxy.core.link import REPLAY_BYTES, UpstreamLink
from liveproxy.core.ports import UpstreamClosed, UpstreamConnection

#: What a two-character message takes in memory (every bound counts this, not characters).
F = footprint("a1")


class FakeConnection:
    """Records what it is sent; can be told to fail, or to block until released."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed = False
        self.gate: trio.Event | None = None

    async def send(self, message: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.closed:
            raise UpstreamClosed(1006)
        self.sent.append(message)


def ws(fake: FakeConnection) -> UpstreamConnection:
    return cast(UpstreamConnection, fake)


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
    link = UpstreamLink(max_buffered_bytes=2 * footprint("12345"))
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


async def test_replay_is_bounded_in_memory_whatever_the_characters() -> None:
    # Turns of 255 K characters with one emoji take 1 MiB each: only two fit the bound, however
    # many are sent (a count bound alone let 32 such turns of 2 MB pin 290 MiB).
    link = UpstreamLink(max_buffered_bytes=10_000_000)
    await link.attach(ws(FakeConnection()))
    turns = [f"{n}{'x' * (255 * 1024)}\U0001f600" for n in range(10)]
    for turn in turns:
        await link.send(turn, replayable=True)
    assert 1000 * 1024 < footprint(turns[0]) < 1024 * 1024
    await link.detach()
    assert link.replay_after_drop() == REPLAY_BYTES // footprint(turns[0])
    new = FakeConnection()
    await link.attach(ws(new))
    assert new.sent == turns[-2:]  # the newest, in order


# --- Transparent resumption: numbered messages, kept from the handle's index on.


async def transparent_link(keep_bytes: int = 10_000) -> tuple[UpstreamLink, FakeConnection]:
    link = UpstreamLink(max_buffered_bytes=10_000, transparent=True, keep_bytes=keep_bytes)
    first = FakeConnection()
    await link.attach(ws(first))
    return link, first


async def test_messages_are_numbered_per_connection_and_kept_after_the_handles_index() -> None:
    link, _ = await transparent_link()
    for message in ("a1", "a2", "a3"):
        await link.send(message)
    await link.send("t4", replayable=True)
    await link.send("a5")
    assert (link.written, link.kept_bytes) == (5, 5 * F)
    link.handle_received(2)  # the handle includes messages 1 and 2
    assert (link.kept_bytes, link.exact()) == (3 * F, True)
    await link.detach()
    await link.send("new")
    assert link.replay_after_drop() == 3
    assert link.written == 0  # the next connection is numbered from 1 again
    second = FakeConnection()
    await link.attach(ws(second))
    assert second.sent == ["a3", "t4", "a5", "new"]  # audio too, ahead of the new message
    assert link.written == 4
    link.handle_received(1)  # numbered on the new connection: "a3" is in, the rest is not
    await link.detach()
    assert link.replay_after_drop() == 3
    third = FakeConnection()
    await link.attach(ws(third))
    assert third.sent == ["t4", "a5", "new"]


async def test_a_handle_with_index_zero_leaves_everything_to_replay() -> None:
    link, _ = await transparent_link()
    await link.send("a1")
    await link.send("a2")
    link.handle_received(0)  # proto3 leaves 0 out: translate reports 0
    await link.detach()
    assert link.replay_after_drop() == 2


@pytest.mark.parametrize("index", [None, 3, 10**18])
async def test_an_unreadable_or_impossible_index_covers_what_was_written(
    index: int | None,
) -> None:
    link, _ = await transparent_link()
    await link.send("a1")
    await link.send("t2", replayable=True)
    link.handle_received(index)  # None: translate could not read it; > written: clamped
    await link.send("a3")
    await link.detach()
    assert link.replay_after_drop() == 1
    new = FakeConnection()
    await link.attach(ws(new))
    assert new.sent == ["a3"]


async def test_a_go_away_switch_replays_what_followed_the_index_only_when_transparent() -> None:
    link, old = await transparent_link()
    for message in ("a1", "a2", "a3"):
        await link.send(message)
    link.handle_received(1)
    await link.detach()
    assert link.replay_after_switch() == 2
    new = FakeConnection()
    await link.attach(ws(new))
    assert (old.sent, new.sent) == (["a1", "a2", "a3"], ["a2", "a3"])

    plain = UpstreamLink(max_buffered_bytes=10_000)
    await plain.attach(ws(FakeConnection()))
    await plain.send("t1", replayable=True)
    plain.handle_received()
    await plain.send("t2", replayable=True)
    await plain.detach()
    assert plain.replay_after_switch() == 0  # as before: nothing is sent again on a switch
    assert plain.replayable() == ["t2"]


async def test_over_the_bound_the_oldest_go_and_a_drop_replays_turn_level_messages_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="liveproxy")
    link, _ = await transparent_link(keep_bytes=3 * F)
    await link.send("a1")
    await link.send("t2", replayable=True)
    await link.send("a3")
    assert (link.kept_bytes, link.exact()) == (3 * F, True)
    await link.send("a4")  # over the bound: "a1" goes
    await link.send("a5")
    assert (link.kept_bytes, link.exact()) == (3 * F, False)
    assert [r.getMessage() for r in caplog.records if "exactly" in r.getMessage()] == [
        f"more than {3 * F} bytes sent upstream since the last resumption handle: "
        "a drop before the next one cannot be replayed exactly"
    ]
    await link.send("a6")  # logged once
    assert len([r for r in caplog.records if "exactly" in r.getMessage()]) == 1
    await link.detach()
    assert link.replay_after_drop() == 1  # the fallback: turn-level messages since the handle
    new = FakeConnection()
    await link.attach(ws(new))
    assert new.sent == ["t2"]


async def test_a_handle_covering_what_the_bound_shed_makes_the_replay_exact_again() -> None:
    link, _ = await transparent_link(keep_bytes=3 * F)
    for i in range(1, 6):
        await link.send(f"a{i}")
    assert not link.exact()  # "a1" and "a2" were shed
    link.handle_received(1)
    assert not link.exact()  # "a2" is neither in the handle nor kept
    link.handle_received(2)
    assert link.exact()
    await link.detach()
    assert link.replay_after_drop() == 3


async def test_replayable_for_a_new_socket_is_the_turn_level_messages_after_the_index() -> None:
    link, _ = await transparent_link()
    await link.send("t1", replayable=True)
    await link.send("a2")
    await link.send("t3", replayable=True)
    await link.send("a4")
    link.handle_received(2)  # "t3" was written before the handle came, but is not in it
    await link.detach()
    await link.send("t5", replayable=True)
    assert link.replayable() == ["t3", "t5"]  # no audio: the user has left
