"""Function calls and session resumption."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from liveproxy.protocol.closes import ENTITY_NOT_FOUND, SESSION_NOT_FOUND

from .helpers import (
    MODEL,
    TEXT_MODEL,
    close_reason,
    connect,
    kinds,
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

TOOLS: dict[str, Any] = {
    "model": TEXT_MODEL,
    "generationConfig": {"responseModalities": ["TEXT"]},
    "tools": [
        {
            "functionDeclarations": [
                {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {}}}
            ]
        }
    ],
}
WEATHER = 'call get_weather {"location": "Tokyo"}'


def response(call_id: str, result: Any) -> dict[str, Any]:
    return {
        "toolResponse": {
            "functionResponses": [{"id": call_id, "name": "get_weather", "response": result}]
        }
    }


async def test_tool_call_then_response_continues_the_turn(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, **TOOLS)
        await send(ws, {"realtimeInput": {"text": WEATHER}})
        call = await receive(ws)
        (function_call,) = call["toolCall"]["functionCalls"]
        assert function_call["name"] == "get_weather"
        assert function_call["args"] == {"location": "Tokyo"}
        await send(ws, response(function_call["id"], {"result": {"tempC": 21}}))
        turn = await until_turn_complete(ws)
        # A second call gets a fresh id.
        await send(ws, {"realtimeInput": {"text": "call get_weather"}})
        second = (await receive(ws))["toolCall"]["functionCalls"][0]
    assert model_text(turn) == 'get_weather returned {"result":{"tempC":21}}'
    assert kinds(turn)[-2:] == ["generationComplete", "turnComplete"]
    assert second["id"] != function_call["id"]
    assert "args" not in second


async def test_undeclared_function_is_just_text(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig={"responseModalities": ["TEXT"]})
        await send(ws, {"realtimeInput": {"text": WEATHER}})
        turn = await until_turn_complete(ws)
    assert model_text(turn) == f'You said: "{WEATHER}"'


async def test_response_to_an_unknown_call_closes_1008(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, **TOOLS)
        await send(ws, response("function-call-999", {}))
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1008, ENTITY_NOT_FOUND)


async def test_barge_in_cancels_a_pending_call(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, **TOOLS)
        await send(
            ws, {"clientContent": {"turns": [{"parts": [{"text": WEATHER}]}], "turnComplete": True}}
        )
        call_id = (await receive(ws))["toolCall"]["functionCalls"][0]["id"]
        await send_audio(ws, tone16(0.2))
        cancelled = await until_turn_complete(ws)
        # A late response to the cancelled call is ignored, not an error.
        await send(ws, response(call_id, {"result": "late"}))
        await send(ws, {"realtimeInput": {"text": "still here?"}})
        await send_audio(ws, silence16(0.6))
        text_turn = await until_turn_complete(ws)
        speech_turn = await until_turn_complete(ws)
    assert cancelled[0] == {"toolCallCancellation": {"ids": [call_id]}}
    assert kinds(cancelled) == ["toolCallCancellation", "interrupted", "turnComplete"]
    assert model_text(text_turn) == 'You said: "still here?"'
    assert model_text(speech_turn) == "You said: [speech 0.20 s]"


async def test_resumption_handle_continues_the_conversation(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    text_only = {"model": TEXT_MODEL, "generationConfig": {"responseModalities": ["TEXT"]}}
    async with connect(emulator) as ws:
        await open_session(ws, sessionResumption={}, **text_only)
        for text in ("one", "two"):
            await send(ws, {"realtimeInput": {"text": text}})
            turn = await until_turn_complete(ws)
            update = await receive(ws)
            assert update["sessionResumptionUpdate"]["resumable"] is True
        handle = update["sessionResumptionUpdate"]["newHandle"]
        prompt_before = turn[-1]["usageMetadata"]["promptTokenCount"]
    async with connect(emulator) as ws:
        await open_session(ws, sessionResumption={"handle": handle}, **text_only)
        await send(ws, {"realtimeInput": {"text": "three"}})
        resumed = await until_turn_complete(ws)
    first, second = emulator.connections
    assert second.session_id == first.session_id
    assert second.resumed_handle == handle
    assert resumed[-1]["usageMetadata"]["promptTokenCount"] > prompt_before


async def test_no_updates_without_session_resumption(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws)
        for text in ("one", "two"):
            await send(ws, {"realtimeInput": {"text": text}})
            await until_turn_complete(ws)
    await emulator.connections[0].wait_closed()
    assert "sessionResumptionUpdate" not in kinds(emulator.connections[0].sent)
    assert emulator.connections[0].session_id


async def test_unknown_or_expired_handle_closes_1008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, speed="fast", handle_ttl_seconds=60)
    async with connect(emulator) as ws:
        await send(ws, {"setup": {"model": MODEL, "sessionResumption": {"handle": "nope"}}})
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1008, SESSION_NOT_FOUND)
    async with connect(emulator) as ws:
        await open_session(ws, sessionResumption={})
        await send(ws, {"realtimeInput": {"text": "x"}})
        await until_turn_complete(ws)
        handle = (await receive(ws))["sessionResumptionUpdate"]["newHandle"]
    await trio.sleep(61)
    async with connect(emulator) as ws:
        await send(ws, {"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}})
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1008, SESSION_NOT_FOUND)
