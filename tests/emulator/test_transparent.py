"""Transparent session resumption over sockets: ``lastConsumedClientMessageIndex``, and a client
that replays exactly the messages after it continuing the very same conversation."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from liveproxy.emulator import Emulator, Faults
from liveproxy.emulator.store import SessionState

from .helpers import (
    VERTEX_MODEL,
    VERTEX_PATH,
    Message,
    audio_message,
    connect,
    open_session,
    receive,
    send,
    silence16,
    start,
    tone16,
    until_turn_complete,
)

VERTEX_HEADERS = {"Authorization": "Bearer t"}
TRANSPARENT = {"sessionResumption": {"transparent": True}}


def update_of(message: Message) -> dict[str, Any]:
    assert list(message) == ["sessionResumptionUpdate"], message
    body: dict[str, Any] = message["sessionResumptionUpdate"]
    return body


async def test_vertex_updates_carry_the_index_of_the_last_consumed_message(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator, VERTEX_PATH, headers=VERTEX_HEADERS) as ws:
        await open_session(ws, model=VERTEX_MODEL, **TRANSPARENT)
        await send(ws, {"realtimeInput": {"text": "one"}})
        await until_turn_complete(ws)
        first = update_of(await receive(ws))
        # Audio that makes no turn, then a text: four more messages, all consumed.
        for _ in range(3):
            await send(ws, audio_message(silence16(0.1)))
        await send(ws, {"realtimeInput": {"text": "two"}})
        await until_turn_complete(ws)
        second = update_of(await receive(ws))
    # int64 as a string; setup is 0, the n-th message after it is n.
    assert first == {"newHandle": first["newHandle"], "resumable": True,
                     "lastConsumedClientMessageIndex": "1"}  # fmt: skip
    assert second["lastConsumedClientMessageIndex"] == "5"
    (record,) = emulator.connections
    assert record.transparent
    assert [(i.handle, i.last_consumed, i.turns) for i in record.issued] == [
        (first["newHandle"], 1, 1),
        (second["newHandle"], 5, 2),
    ]
    assert record.consumed == 5
    assert record.conversation is not None
    assert record.conversation.heard == ["one", "two"]
    assert record.conversation.audio_bytes == 3 * 3200


async def test_the_index_counts_the_messages_of_each_connection(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator, VERTEX_PATH, headers=VERTEX_HEADERS) as ws:
        await open_session(ws, model=VERTEX_MODEL, **TRANSPARENT)
        for text in ("one", "two"):
            await send(ws, {"realtimeInput": {"text": text}})
            await until_turn_complete(ws)
            handle = update_of(await receive(ws))["newHandle"]
    resumption = {"sessionResumption": {"handle": handle, "transparent": True}}
    async with connect(emulator, VERTEX_PATH, headers=VERTEX_HEADERS) as ws:
        await open_session(ws, model=VERTEX_MODEL, **resumption)
        await send(ws, {"realtimeInput": {"text": "three"}})
        await until_turn_complete(ws)
        update = update_of(await receive(ws))
    assert update["lastConsumedClientMessageIndex"] == "1"  # numbering starts again
    first, second = emulator.connections
    assert (second.resumed_handle, second.resumed_after) == (handle, 2)
    assert second.conversation is not None
    assert second.conversation.heard == ["one", "two", "three"]
    assert second.conversation.turns == 3
    assert first.conversation is not None
    assert first.conversation.heard == ["one", "two"]  # each connection's state is its own


async def test_the_developer_api_accepts_transparent_and_sends_no_index(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, **TRANSPARENT)
        await send(ws, {"realtimeInput": {"text": "one"}})
        await until_turn_complete(ws)
        update = update_of(await receive(ws))
    assert set(update) == {"newHandle", "resumable"}
    (record,) = emulator.connections
    assert not record.transparent
    assert [i.last_consumed for i in record.issued] == [1]  # recorded all the same


async def test_no_handle_while_the_model_still_owes_a_turn(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    queued = {"realtimeInputConfig": {"activityHandling": "NO_INTERRUPTION"}}
    async with connect(emulator, VERTEX_PATH, headers=VERTEX_HEADERS) as ws:
        await open_session(ws, model=VERTEX_MODEL, **TRANSPARENT, **queued)
        await send(ws, {"realtimeInput": {"text": "one"}})
        await send(ws, {"realtimeInput": {"text": "two"}})
        first = await until_turn_complete(ws)
        between = await receive(ws)
        second = await until_turn_complete(ws)
        after = update_of(await receive(ws))
    assert first[-1]["serverContent"]["turnComplete"]
    assert second[-1]["serverContent"]["turnComplete"]
    # resumable: false with no handle: both are proto3 defaults, so the body is empty.
    assert between == {"sessionResumptionUpdate": {}}
    assert after["lastConsumedClientMessageIndex"] == "2"


# --- A client that does what transparent resumption asks of it, against a dropped connection.

#: Pacing of the script: one 100 ms message per 100 ms, like a microphone.
PACE = 0.1
NO_INTERRUPTION = {"realtimeInputConfig": {"activityHandling": "NO_INTERRUPTION"}}


def script() -> list[Message]:
    """A spoken conversation in 100 ms messages. The second utterance starts while the first
    answer plays, so a handle is issued in the middle of it; with ``NO_INTERRUPTION`` nothing
    depends on timing, so any two runs that hear the same input end the same."""
    pcm = (
        tone16(0.5)
        + silence16(0.6)
        + tone16(1.0, amplitude=5000)
        + silence16(0.6)
        + tone16(0.7, amplitude=7000)
        + silence16(0.6)
    )
    chunks = [audio_message(pcm[i : i + 3200]) for i in range(0, len(pcm), 3200)]
    return [*chunks, {"realtimeInput": {"text": "and a text"}}, *_silence(3.0)]


def _silence(seconds: float) -> list[Message]:
    return [audio_message(silence16(0.1)) for _ in range(round(seconds / 0.1))]


@attrs.frozen
class Resume:
    """One resumption by :class:`TransparentClient`: the handle, its index, how many messages
    the dropped connection had been sent, and what was sent again."""

    handle: str
    covered: int
    sent: int
    replay: list[Message]


class TransparentClient:
    """Numbers its messages per connection (setup 0), and after a drop resumes with the latest
    handle and sends again exactly the messages after its ``lastConsumedClientMessageIndex``.

    ``shift`` deliberately gets the replay wrong, for the tests that show it would be seen:
    -1 sends the last consumed message again too, +1 leaves out the first unconsumed one.
    """

    def __init__(self, emulator: Emulator, nursery: trio.Nursery, shift: int = 0) -> None:
        self._url = emulator.url + VERTEX_PATH
        self._nursery = nursery
        self._shift = shift
        self._ws: WebSocketConnection | None = None
        self._log: list[Message] = []  # the messages of the current connection, index - 1
        self._covered = 0  # the index the latest handle includes
        self._handle: str | None = None
        self._ready = trio.Event()
        self._resuming = False
        self._closing = False
        self.resumes: list[Resume] = []

    async def start(self) -> None:
        await self._open(None)
        self._nursery.start_soon(self._receive_forever)

    async def _open(self, handle: str | None) -> None:
        headers = [(k.encode(), v.encode()) for k, v in VERTEX_HEADERS.items()]
        ws = await connect_websocket_url(self._nursery, self._url, extra_headers=headers)
        resumption: dict[str, Any] = {"transparent": True}
        if handle is not None:
            resumption["handle"] = handle
        setup = {"model": VERTEX_MODEL, "sessionResumption": resumption, **NO_INTERRUPTION}
        await send(ws, {"setup": setup})
        assert list(await receive(ws)) == ["setupComplete"]
        self._ws, self._log, self._covered = ws, [], 0

    async def send(self, message: Message) -> None:
        while self._resuming:
            await self._ready.wait()
        assert self._ws is not None
        self._log.append(message)
        try:
            await send(self._ws, message)
        except ConnectionClosed:
            await self._ready.wait()  # the receiver resumes, and sends this one again

    async def _receive_forever(self) -> None:
        while not self._closing:
            assert self._ws is not None
            try:
                message = orjson.loads(await self._ws.get_message())
            except ConnectionClosed:
                if not self._closing:
                    await self._resume()
                continue
            update = message.get("sessionResumptionUpdate")
            if update is not None and update.get("resumable"):
                self._handle = update["newHandle"]
                self._covered = int(update.get("lastConsumedClientMessageIndex", 0))

    async def _resume(self) -> None:
        self._resuming = True
        assert self._handle is not None, "dropped before any handle"
        replay = self._log[self._covered + self._shift :]
        self.resumes.append(Resume(self._handle, self._covered, len(self._log), replay))
        await self._open(self._handle)
        assert self._ws is not None
        for message in replay:
            self._log.append(message)
            await send(self._ws, message)
        self._resuming = False
        self._ready.set()
        self._ready = trio.Event()

    async def aclose(self) -> None:
        self._closing = True
        assert self._ws is not None
        await self._ws.aclose()


async def converse(emulator: Emulator, shift: int = 0) -> tuple[TransparentClient, SessionState]:
    """Play the script through a :class:`TransparentClient`; return the client and the
    conversation as the emulator recorded it on the last connection."""
    async with trio.open_nursery() as nursery:
        client = TransparentClient(emulator, nursery, shift)
        await client.start()
        for message in script():
            await client.send(message)
            await trio.sleep(PACE)
        await trio.sleep(2.0)  # the last answers play out
        await client.aclose()
        nursery.cancel_scope.cancel()
    last = emulator.connections[-1]
    await last.wait_closed()
    assert last.conversation is not None
    return client, last.conversation


def record_of(state: SessionState) -> tuple[Any, ...]:
    """The emulator's record of a conversation."""
    return (
        state.turns,
        state.heard,
        state.audio_bytes,
        state.audio_sha256,
        state.context,
        state.calls,
    )


def as_received(messages: list[Message]) -> list[tuple[str, Any]]:
    """``messages`` as :attr:`ConnectionRecord.received` has them."""
    return [next(iter(message.items())) for message in messages]


@pytest.mark.parametrize("drop_after", [17, 19, 24, 29, 33, 45, 60])
async def test_replaying_after_the_index_continues_the_same_conversation(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, drop_after: int
) -> None:
    emulator = await start(nursery)
    _, expected = await converse(emulator)
    assert expected.turns == 4
    # Each utterance with 100 ms of prefix padding, but the first (nothing came before it).
    assert expected.heard == [
        "[speech 0.50 s]", "[speech 1.10 s]", "[speech 0.80 s]", "and a text"
    ]  # fmt: skip

    emulator.queue_faults(Faults(drop_after=drop_after))
    client, got = await converse(emulator)
    first, second = emulator.connections[1:]
    assert (first.ended_by, first.close_code) == ("dropped", 1006)
    assert first.received_count == drop_after
    (resume,) = client.resumes
    # The client resumed with the latest handle the dropped connection issued.
    assert (resume.handle, resume.covered) == (
        first.issued[-1].handle,
        first.issued[-1].last_consumed,
    )
    assert first.issued[-1].last_consumed <= first.consumed <= drop_after
    assert (second.resumed_handle, second.resumed_after) == (resume.handle, resume.covered)
    assert second.session_id == first.session_id
    # It sent again what followed the index: what the emulator had received (and maybe not
    # consumed), then what was still in flight when the connection dropped.
    assert resume.replay == script()[resume.covered : resume.sent]
    missed = first.received[resume.covered :]
    assert as_received(resume.replay)[: len(missed)] == missed
    assert second.received[: len(resume.replay)] == as_received(resume.replay)
    # And the conversation is the one that would have gone on without the drop.
    assert record_of(got) == record_of(expected)


async def test_a_handle_issued_mid_utterance_keeps_the_half_heard_utterance(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    emulator.queue_faults(Faults(drop_after=19))
    client, got = await converse(emulator)
    first = emulator.connections[0]
    # The first answer ended while the second utterance (messages 12 to 21) went on: the handle
    # includes part of it, and the replay brings only the rest.
    (resume,) = client.resumes
    assert 12 < resume.covered < 19
    assert first.issued[0].turns == 1
    assert got.heard[:2] == ["[speech 0.50 s]", "[speech 1.10 s]"]


@pytest.mark.parametrize("shift", [-1, 1], ids=["one-too-many", "one-too-few"])
async def test_replaying_one_message_too_many_or_too_few_shows_in_the_record(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, shift: int
) -> None:
    emulator = await start(nursery)
    _, expected = await converse(emulator)
    emulator.queue_faults(Faults(drop_after=19))
    client, got = await converse(emulator, shift=shift)
    (resume,) = client.resumes
    # The message sent twice, or never, is a 100 ms chunk of the second utterance's tone.
    index = resume.covered if shift < 0 else resume.covered + 1
    assert 12 <= index <= 21
    assert len(resume.replay) == resume.sent - resume.covered - shift
    assert got.audio_bytes == expected.audio_bytes - shift * 3200
    assert got.audio_sha256 != expected.audio_sha256
    assert expected.heard[1] == "[speech 1.10 s]"
    assert got.heard[1] == f"[speech {1.1 - shift * 0.1:.2f} s]"
    assert record_of(got) != record_of(expected)
