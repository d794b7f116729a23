"""What today's models do differently, over sockets: gemini-3.8-live's NON_BLOCKING calls and the
scheduling of their results, the extended-thinking model's interactionStatus and thought-out
turns, the transcription model's text-only answers."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection

from liveproxy.protocol.closes import ENTITY_NOT_FOUND

from .helpers import (
    MODEL,
    Message,
    close_reason,
    kinds,
    model_audio,
    model_text,
    open_session,
    receive,
    send,
    send_audio,
    server_content,
    silence16,
    start,
    tone16,
    transcript,
    until_turn_complete,
)
from .helpers import connect as connect_to

EXTENDED = "models/gemini-3.8-live-extended-thinking"
TRANSCRIBE = "models/gemini-3.5-transcribe-live"
SPOKEN: dict[str, Any] = {"outputAudioTranscription": {}}


def tools(*declarations: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{"functionDeclarations": list(declarations) or [{"name": "get_weather"}]}]}


WEATHER = "call get_weather"
RESULT = 'get_weather returned {"tempC":21}'


def tool_response(call_id: str, **fields: Any) -> Message:
    response = {"id": call_id, "name": "get_weather", "response": {"tempC": 21}, **fields}
    return {"toolResponse": {"functionResponses": [response]}}


def call_of(message: Message) -> str:
    (call,) = message["toolCall"]["functionCalls"]
    call_id: str = call["id"]
    return call_id


def said(messages: list[Message]) -> str:
    return transcript(messages, "outputTranscription")


def statuses(messages: list[Message]) -> list[str]:
    return server_content(messages, "interactionStatus")


async def text(ws: WebSocketConnection, words: str) -> None:
    await send(ws, {"realtimeInput": {"text": words}})


# --- gemini-3.8-live: NON_BLOCKING function calls


async def call_out(ws: WebSocketConnection) -> tuple[str, list[Message]]:
    """Ask for the weather; the call turn ends at once: its id and its messages."""
    await text(ws, WEATHER)
    turn = await until_turn_complete(ws)
    return call_of(turn[0]), turn


async def test_a_non_blocking_call_ends_its_turn_and_the_result_comes_when_idle(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, sessionResumption={}, **SPOKEN, **tools())
        call_id, turn = await call_out(ws)
        assert await receive(ws) == {"sessionResumptionUpdate": {}}  # the result is owed
        await send(ws, tool_response(call_id, scheduling="WHEN_IDLE"))
        result = await until_turn_complete(ws)
        update = await receive(ws)
    assert kinds(turn) == ["toolCall", "turnComplete"]
    assert said(result) == RESULT
    assert kinds(result)[-2:] == ["generationComplete", "turnComplete"]
    assert update["sessionResumptionUpdate"]["resumable"] is True
    (record,) = emulator.connections
    assert record.conversation is not None
    assert record.conversation.turns == 2


@pytest.mark.parametrize("scheduling", [None, "SCHEDULING_UNSPECIFIED", "WHEN_IDLE", 2])
async def test_when_idle_waits_for_the_turn_under_way(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, scheduling: Any
) -> None:
    emulator = await start(nursery)
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **tools())
        call_id, _ = await call_out(ws)
        await text(ws, "tell me a long story")  # 1.6 s of answer
        first = await receive(ws)
        fields = {} if scheduling is None else {"scheduling": scheduling}
        await send(ws, tool_response(call_id, **fields))
        story = [first, *await until_turn_complete(ws)]
        result = await until_turn_complete(ws)
    assert "interrupted" not in kinds(story)
    assert said(story) == 'You said: "tell me a long story"'
    assert said(result) == RESULT


@pytest.mark.parametrize("scheduling", ["INTERRUPT", 3])
async def test_interrupt_stops_the_turn_under_way_and_speaks_now(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, scheduling: Any
) -> None:
    emulator = await start(nursery)
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **tools())
        call_id, _ = await call_out(ws)
        await text(ws, "tell me a long story")
        first = await receive(ws)
        started = trio.current_time()
        await send(ws, tool_response(call_id, scheduling=scheduling))
        story = [first, *await until_turn_complete(ws)]
        assert trio.current_time() - started == pytest.approx(0.0)
        result = await until_turn_complete(ws)
    assert kinds(story)[-2:] == ["interrupted", "turnComplete"]
    assert said(result) == RESULT


async def test_interrupt_with_no_turn_under_way_just_speaks(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **tools())
        call_id, _ = await call_out(ws)
        await send(ws, tool_response(call_id, scheduling="INTERRUPT"))
        result = await until_turn_complete(ws)
    assert said(result) == RESULT
    assert "interrupted" not in kinds(result)


async def test_silent_adds_the_result_to_the_context_without_a_turn(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, sessionResumption={}, **SPOKEN, **tools())
        call_id, turn = await call_out(ws)
        assert await receive(ws) == {"sessionResumptionUpdate": {}}
        await send(ws, tool_response(call_id, scheduling="SILENT"))
        # No turn: only a fresh handle, now that nothing is owed.
        update = await receive(ws)
        await text(ws, "hi")
        after = await until_turn_complete(ws)
    assert update["sessionResumptionUpdate"]["resumable"] is True
    before = turn[-1]["usageMetadata"]["promptTokenCount"]
    # The response ({"tempC":21}, 3 tokens) and "hi" (1 token) are in the context now.
    assert after[-1]["usageMetadata"]["promptTokenCount"] == before + 3 + 1
    assert said(after) == 'You said: "hi"'
    (record,) = emulator.connections
    assert record.conversation is not None
    assert record.conversation.turns == 2


async def test_a_result_that_will_continue_keeps_the_call_open(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **tools())
        call_id, _ = await call_out(ws)
        await send(ws, tool_response(call_id, willContinue=True))
        first = await until_turn_complete(ws)
        await send(ws, tool_response(call_id))
        second = await until_turn_complete(ws)
        await send(ws, tool_response(call_id))  # the call is over now
        reason = await close_reason(ws)
    assert said(first) == said(second) == RESULT
    assert (reason.code, reason.reason) == (1008, ENTITY_NOT_FOUND)


async def test_barge_in_does_not_cancel_a_call_already_out(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **tools())
        call_id, _ = await call_out(ws)
        await send_audio(ws, tone16(0.3) + silence16(0.6))  # the user speaks meanwhile
        speech = await until_turn_complete(ws)
        await send(ws, tool_response(call_id))
        result = await until_turn_complete(ws)
    assert "toolCallCancellation" not in kinds(speech)
    assert len(model_audio(speech)) == int(0.3 * 48_000)
    assert said(result) == RESULT


async def test_a_blocking_declaration_keeps_the_turn_waiting(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, speed="fast")
    declared = tools({"name": "get_weather", "behavior": "BLOCKING"})
    async with connect_to(emulator) as ws:
        await open_session(ws, **SPOKEN, **declared)
        await text(ws, WEATHER)
        call = await receive(ws)
        with trio.move_on_after(10) as waited:  # nothing until the response
            await receive(ws)
        assert waited.cancelled_caught
        await send(ws, tool_response(call_of(call), scheduling="SILENT"))  # ignored: blocking
        turn = await until_turn_complete(ws)
    assert said(turn) == RESULT
    assert "toolCall" not in kinds(turn)


async def test_the_older_models_keep_every_call_blocking(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    declared = tools({"name": "get_weather", "behavior": "NON_BLOCKING"})
    async with connect_to(emulator) as ws:
        await open_session(
            ws, model="models/gemini-2.5-flash-native-audio-preview-12-2025", **SPOKEN, **declared
        )
        await text(ws, WEATHER)
        call = await receive(ws)
        await send(ws, tool_response(call_of(call)))
        turn = await until_turn_complete(ws)
    assert kinds([call]) == ["toolCall"]
    assert said(turn) == RESULT


# --- gemini-3.8-live-extended-thinking: interactionStatus, thinking on request


THOUGHTFUL: dict[str, Any] = {
    "model": EXTENDED,
    "generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True}},
    "sessionResumption": {},
    **SPOKEN,
}


async def test_a_plain_turn_is_one_interaction(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **THOUGHTFUL)
        await text(ws, "hello")
        turn = await until_turn_complete(ws)
        update = await receive(ws)
    assert turn[0]["serverContent"]["interactionStatus"] == "IN_PROGRESS"
    assert turn[-1]["serverContent"]["interactionStatus"] == "IDLE"
    assert statuses(turn) == ["IN_PROGRESS", "IDLE"]
    assert update["sessionResumptionUpdate"]["resumable"] is True
    assert "thoughtsTokenCount" not in turn[-1]["usageMetadata"]


async def test_asked_to_think_it_goes_on_after_turn_complete(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    async with connect_to(emulator) as ws:
        await open_session(ws, **THOUGHTFUL)
        await text(ws, "think about lunch")
        first = await until_turn_complete(ws)
        between = await receive(ws)
        paused_at = trio.current_time()
        thought = await receive(ws)
        pause = trio.current_time() - paused_at
        second = [thought, *await until_turn_complete(ws)]
        after = await receive(ws)
    assert said(first) == "Let me think."
    assert statuses(first) == ["IN_PROGRESS", "IN_PROGRESS"]
    assert first[-1]["serverContent"] == {"turnComplete": True, "interactionStatus": "IN_PROGRESS"}
    assert between == {"sessionResumptionUpdate": {}}  # not resumable while IN_PROGRESS
    assert pause == pytest.approx(3.0)
    assert thought == {
        "serverContent": {
            "modelTurn": {
                "parts": [{"text": 'Thinking about: "think about lunch"', "thought": True}]
            }
        }
    }
    assert said(second) == 'You said: "think about lunch"'
    assert statuses(second) == ["IDLE"]
    usage = second[-1]["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 9  # the thought's 35 characters
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["responseTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert after["sessionResumptionUpdate"]["resumable"] is True
    (record,) = emulator.connections
    assert [issued.turns for issued in record.issued] == [2]  # the handle came after IDLE


async def test_thinking_in_fast_speed_does_not_pause_and_thoughts_may_stay_hidden(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, speed="fast")
    setup = {**THOUGHTFUL, "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}}
    async with connect_to(emulator) as ws:
        await open_session(ws, **setup)
        started = trio.current_time()
        await text(ws, "Think!")
        first = await until_turn_complete(ws)
        await receive(ws)
        second = await until_turn_complete(ws)
    assert trio.current_time() - started == pytest.approx(0.0)
    assert said(first) == "Let me think."
    assert model_text(second) == ""  # no thought part
    assert second[-1]["usageMetadata"]["thoughtsTokenCount"] == 6
    assert statuses(first + second) == ["IN_PROGRESS", "IN_PROGRESS", "IDLE"]


async def test_barge_in_during_the_pause_ends_the_thought_out_turn(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    async with connect_to(emulator) as ws:
        await open_session(ws, **THOUGHTFUL)
        await text(ws, "think about it")
        await until_turn_complete(ws)
        await receive(ws)
        await trio.sleep(1.0)
        await text(ws, "never mind")
        interrupted = await until_turn_complete(ws)
        await receive(ws)
        answer = await until_turn_complete(ws)
    assert kinds(interrupted) == ["interrupted", "turnComplete", "interactionStatus"]
    assert statuses(interrupted) == ["IN_PROGRESS"]  # "never mind" is owed
    assert said(answer) == 'You said: "never mind"'
    assert statuses(answer) == ["IDLE"]


async def test_a_tool_call_is_in_progress_until_its_result_is_spoken(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **THOUGHTFUL, **tools())
        call_id, turn = await call_out(ws)
        between = await receive(ws)
        await send(ws, tool_response(call_id))
        result = await until_turn_complete(ws)
        after = await receive(ws)
    assert kinds(turn) == ["toolCall", "turnComplete", "interactionStatus"]
    assert turn[-1]["serverContent"] == {"turnComplete": True, "interactionStatus": "IN_PROGRESS"}
    assert between == {"sessionResumptionUpdate": {}}
    assert said(result) == RESULT
    assert statuses(result) == ["IDLE"]
    assert after["sessionResumptionUpdate"]["resumable"] is True


async def test_a_silent_result_ends_the_interaction_without_a_turn(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, **THOUGHTFUL, **tools())
        call_id, _ = await call_out(ws)
        await receive(ws)
        await send(ws, tool_response(call_id, scheduling="SILENT"))
        idle = await receive(ws)
        update = await receive(ws)
    assert idle == {"serverContent": {"interactionStatus": "IDLE"}}
    assert update["sessionResumptionUpdate"]["resumable"] is True


async def test_gemini_3_8_live_reports_no_interaction_status(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, model=MODEL, **SPOKEN, **tools())
        await text(ws, "think about it")  # no thinking either
        turn = await until_turn_complete(ws)
        _, call = await call_out(ws)
    assert said(turn) == 'You said: "think about it"'
    assert statuses(turn + call) == []


# --- gemini-3.5-transcribe-live: transcription only


async def test_the_transcription_model_answers_speech_with_its_transcript_in_text(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect_to(emulator) as ws:
        await open_session(ws, model=TRANSCRIBE, inputAudioTranscription={}, **tools())
        await send_audio(ws, tone16(0.8) + silence16(0.6))
        turn = await until_turn_complete(ws)
        await text(ws, "hello")
        to_text = await until_turn_complete(ws)
        await text(ws, WEATHER)  # no conversation: no function calls either
        to_call = await until_turn_complete(ws)
    assert kinds(turn) == [
        "inputTranscription", "modelTurn", "generationComplete", "turnComplete"
    ]  # fmt: skip
    assert transcript(turn, "inputTranscription") == "[speech 0.80 s]"
    assert server_content(turn, "modelTurn") == [{"parts": [{"text": "[speech 0.80 s]"}]}]
    assert model_audio(turn) == b""
    assert turn[-1]["usageMetadata"]["responseTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 4}
    ]
    # Text input: nothing to transcribe, so nothing but the end of the turn.
    assert kinds(to_text) == kinds(to_call) == ["turnComplete"]
    assert "responseTokenCount" not in to_text[-1]["usageMetadata"]
    (record,) = emulator.connections
    assert record.conversation is not None
    assert record.conversation.heard == ["[speech 0.80 s]", "hello", WEATHER]
