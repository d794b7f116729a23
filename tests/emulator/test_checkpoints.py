"""What a resumption handle keeps, tested on the conversation state machine itself (no I/O).

For every point of a conversation: take the checkpoint a handle would keep, let the old
connection consume a few more messages (they are lost with it), resume a new conversation from
the checkpoint and feed it exactly the messages after ``last_consumed``. The result must be the
uninterrupted conversation: the same turns, and the same record of what the model heard.
(The tests that use :class:`HandleStore` are async only because it reads trio's clock.)
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from liveproxy.emulator.catalog import ModelCatalog
from liveproxy.emulator.conversation import Conversation
from liveproxy.emulator.decode import ClientMessage
from liveproxy.emulator.options import SessionOptions, read_setup
from liveproxy.emulator.store import Checkpoint, HandleStore, SessionState
from liveproxy.emulator.turns import Turn

from .helpers import MODEL, TEXT_MODEL, silence16, tone16

Outcome = tuple[str | None, str, int | None]


def options_of(**setup: Any) -> SessionOptions:
    return read_setup(
        {"model": MODEL, "sessionResumption": {}, **setup},
        api="vertex",
        api_version="v1",
        models=ModelCatalog(any_model=True),
    )


def audio(pcm: bytes, mime: str = "audio/pcm;rate=16000") -> ClientMessage:
    body = {"audio": {"mimeType": mime, "data": base64.b64encode(pcm).decode()}}
    return ClientMessage("realtimeInput", body, pcm)


def chunks(pcm: bytes, size: int) -> list[ClientMessage]:
    """``pcm`` in messages of ``size`` bytes: sizes that are not whole 20 ms VAD frames leave
    part of a frame in the detector between messages."""
    return [audio(pcm[start : start + size]) for start in range(0, len(pcm), size)]


def realtime(**body: Any) -> ClientMessage:
    return ClientMessage("realtimeInput", body)


def content(text: str, *, complete: bool) -> ClientMessage:
    body = {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": complete}
    return ClientMessage("clientContent", body)


AUTOMATIC = [
    *chunks(silence16(0.2) + tone16(0.5) + silence16(0.6), 1000),
    realtime(text="hello"),
    content("part one", complete=False),
    realtime(video={"mimeType": "image/jpeg", "data": "/9j/"}),
    content("part two", complete=True),
    *chunks(tone16(0.3), 1100),
    realtime(audioStreamEnd=True),
    audio(b"\x00\x01" * 50, "audio/ogg"),  # consumed and recorded, not heard
    *chunks(tone16(0.4, amplitude=3000) + silence16(0.7), 3200),
]
MANUAL = [
    realtime(activityStart={}),
    *chunks(tone16(0.3), 900),
    realtime(activityEnd={}),
    *chunks(tone16(0.1), 900),  # outside an activity: recorded, not part of a turn
    realtime(activityStart={}),
    *chunks(silence16(0.2) + tone16(0.2), 1500),
    realtime(activityEnd={}),
]
MANUAL_SETUP = {"realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}}


def record_of(state: SessionState) -> tuple[Any, ...]:
    return (
        state.heard,
        state.audio_bytes,
        state.audio_sha256,
        state.context,
        state.calls,
        state.system_tokens,
    )


def feed(conversation: Conversation, messages: list[ClientMessage]) -> list[Outcome]:
    """Handle ``messages``; every turn is played at once (done), as a fast speaker would."""
    outcomes: list[Outcome] = []
    for message in messages:
        for turn in conversation.handle(message):
            outcomes.append(
                (turn.transcript, turn.reply, None if turn.audio is None else len(turn.audio))
            )
            turn.done = True
    return outcomes


def uninterrupted(options: SessionOptions, messages: list[ClientMessage]) -> tuple[Any, ...]:
    state = SessionState("s")
    outcomes = feed(Conversation(options, state), messages)
    return record_of(state), outcomes


def resumed(
    options: SessionOptions, messages: list[ClientMessage], split: int, *, lost: int, shift: int
) -> tuple[Any, ...]:
    """Cut after ``split`` messages (the old connection consumes ``lost`` more, then goes);
    resume from the handle and replay from index ``last_consumed + 1 + shift``."""
    store = HandleStore(ttl=60.0)
    state = SessionState("s")
    old = Conversation(options, state)
    outcomes = feed(old, messages[:split])
    handle = store.issue(_checkpoint(old))
    feed(old, messages[split : split + lost])  # consumed after the handle: not in it
    checkpoint = store.resume(handle)
    assert checkpoint is not None
    assert checkpoint.last_consumed == split
    new = Conversation(options, checkpoint.state, checkpoint.pending)
    outcomes += feed(new, messages[checkpoint.last_consumed + shift :])
    assert new.consumed == len(messages) - split - shift
    return record_of(checkpoint.state), outcomes


def _checkpoint(conversation: Conversation) -> Checkpoint:
    checkpoint = conversation.checkpoint(Turn())
    assert checkpoint is not None
    return checkpoint


@pytest.mark.parametrize(
    ("setup", "messages"),
    [
        ({}, AUTOMATIC),
        ({"model": TEXT_MODEL, "generationConfig": {"responseModalities": ["TEXT"]}}, AUTOMATIC),
        (MANUAL_SETUP, MANUAL),
    ],
    ids=["automatic-audio", "automatic-text", "manual"],
)
async def test_replaying_what_follows_the_index_continues_exactly_anywhere(
    setup: dict[str, Any], messages: list[ClientMessage]
) -> None:
    options = options_of(**setup, systemInstruction={"parts": [{"text": "Be brief."}]})
    expected = uninterrupted(options, messages)
    assert len(expected[1]) >= 2  # the script makes several turns
    for split in range(len(messages) + 1):
        for lost in (0, 1, 3):
            assert resumed(options, messages, split, lost=lost, shift=0) == expected, split


@pytest.mark.parametrize("shift", [-1, 1], ids=["one-too-many", "one-too-few"])
async def test_replaying_one_message_too_many_or_too_few_shows_in_the_record(shift: int) -> None:
    options = options_of()
    (heard, audio_bytes, digest, *_), outcomes = uninterrupted(options, AUTOMATIC)
    # Cut inside the first utterance, where each message is a 1000-byte audio chunk.
    split = 8
    assert all(m.audio is not None and len(m.audio) == 1000 for m in AUTOMATIC[7:10])
    (got_heard, got_bytes, got_digest, *_), got_outcomes = resumed(
        options, AUTOMATIC, split, lost=2, shift=shift
    )
    assert got_bytes == audio_bytes - shift * 1000
    assert got_digest != digest
    assert got_heard != heard  # the first utterance is 1000 bytes (31 ms) longer or shorter
    assert got_outcomes != outcomes


def test_no_checkpoint_while_a_turn_is_owed() -> None:
    options = options_of(
        realtimeInputConfig={"activityHandling": "NO_INTERRUPTION"},
        tools=[{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}],
    )
    conversation = Conversation(options, SessionState("s"))
    (first,) = conversation.handle(realtime(text="one"))
    (second,) = conversation.handle(realtime(text="two"))
    assert conversation.checkpoint(first) is None  # "two" is still owed
    assert conversation.checkpoint(second) is None  # so is "one"
    first.done = True
    checkpoint = conversation.checkpoint(second)
    assert checkpoint is not None
    assert checkpoint.last_consumed == 2
    second.done = True
    (call,) = conversation.handle(realtime(text="call f"))
    assert call.call is not None
    assert conversation.checkpoint(Turn()) is None  # a function call is pending
    assert conversation.checkpoint(call) is not None  # its own turn is the one ending


def test_an_interrupted_turn_is_not_owed() -> None:
    conversation = Conversation(options_of(), SessionState("s"))
    (first,) = conversation.handle(realtime(text="one"))
    (second,) = conversation.handle(realtime(text="two"))  # barge-in: "one" is interrupted
    assert first.interrupted.is_set()
    assert conversation.checkpoint(first) is None  # "two" is owed
    second.done = True
    assert conversation.checkpoint(first) is not None


def test_a_resumed_setup_with_other_vad_settings_starts_a_fresh_vad() -> None:
    options = options_of()
    state = SessionState("s")
    old = Conversation(options, state)
    feed(old, chunks(tone16(0.3), 3200))  # an utterance in progress
    checkpoint = _checkpoint(old)
    assert checkpoint.pending.vad is not None
    assert checkpoint.pending.vad.speaking
    other = options_of(
        realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}}
    )
    new = Conversation(other, checkpoint.state, checkpoint.pending)
    (turn,) = feed(new, chunks(tone16(0.2) + silence16(0.3), 3200))
    assert turn[0] == "[speech 0.20 s]"  # the 0.3 s before the handle are not part of it
    same = Conversation(options, checkpoint.state.snapshot(), checkpoint.pending.copy())
    (turn,) = feed(same, chunks(tone16(0.2) + silence16(0.6), 3200))
    assert turn[0] == "[speech 0.50 s]"


def test_a_resumed_system_instruction_replaces_the_old_one() -> None:
    state = SessionState("s")
    Conversation(options_of(systemInstruction={"parts": [{"text": "x" * 40}]}), state)
    assert state.context == {"TEXT": 10}
    Conversation(options_of(systemInstruction={"parts": [{"text": "x" * 8}]}), state)
    assert (state.context, state.system_tokens) == ({"TEXT": 2}, 2)
    Conversation(options_of(), state)
    assert (state.context, state.system_tokens) == ({}, 0)
