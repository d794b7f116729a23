"""Framing and setup rules over real sockets: what the first messages may be, and how the
emulator refuses the rest."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from liveproxy.emulator.catalog import vertex_not_found
from liveproxy.emulator.decode import INVALID_JSON
from liveproxy.protocol.closes import (
    INVALID_ARGUMENT,
    MEDIA_CHUNKS_DEPRECATED,
    model_not_found,
    truncate_reason,
)
from liveproxy.protocol.live_models import LIVE_MODELS, SHUT_DOWN

from .helpers import (
    MODEL,
    TEXT_MODEL,
    VERTEX_MODEL,
    VERTEX_PATH,
    audio_message,
    close_reason,
    connect,
    open_session,
    receive,
    send,
    start,
    until_turn_complete,
)


async def refused(nursery: trio.Nursery, *frames: Any, **config: Any) -> tuple[int, str]:
    """Send ``frames`` (dicts as JSON text, str/bytes as they are) and return the close."""
    emulator = await start(nursery, **config)
    async with connect(emulator) as ws:
        for frame in frames:
            if isinstance(frame, dict):
                await send(ws, frame)
            else:
                await ws.send_message(frame)
        reason = await close_reason(ws)
    record = emulator.connections[0]
    await record.wait_closed()
    assert (record.close_code, record.close_reason) == (reason.code, reason.reason)
    assert record.ended_by == "server"
    assert reason.reason is not None
    return reason.code, reason.reason


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (['{"setup": {'], INVALID_JSON),
        ([b"\xff\xfe"], INVALID_JSON),
        ([{"realtimeInput": {"text": "hi"}}], INVALID_ARGUMENT),
        ([{}], INVALID_ARGUMENT),
        (
            [{"setup": {"model": MODEL, "speechConfig": {}}}],
            "Invalid JSON payload received. Unknown name \"speechConfig\" at 'setup': "
            "Cannot find field.",
        ),
        (
            [{"setup": {"model": MODEL, "generation_config": {"input_audio_transcription": {}}}}],
            'Invalid JSON payload received. Unknown name "input_audio_transcription" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            [{"setup": {"model": 5}}],
            "Invalid value at 'setup.model' (TYPE_STRING), 5",
        ),
        (
            [{"setup": {"model": MODEL}, "realtimeInput": {}}],
            "Invalid JSON payload received. Oneof field 'message_type' is already set. "
            "Cannot set 'realtimeInput'",
        ),
        ([{"setup": {}}], INVALID_ARGUMENT),
        (
            [
                {
                    "setup": {
                        "model": MODEL,
                        "generationConfig": {"responseModalities": ["TEXT", "AUDIO"]},
                    }
                }
            ],
            INVALID_ARGUMENT,
        ),
        (
            [{"setup": {"model": MODEL, "generationConfig": {"stopSequences": ["x"]}}}],
            INVALID_ARGUMENT,
        ),
        ([{"setup": {"model": MODEL}}, {"setup": {"model": MODEL}}], INVALID_ARGUMENT),
        (
            [
                {"setup": {"model": MODEL}},
                {"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm", "data": "AAA="}]}},
            ],
            MEDIA_CHUNKS_DEPRECATED,
        ),
        ([{"setup": {"model": MODEL}}, "not json"], INVALID_JSON),
        (
            [{"setup": {"model": MODEL}}, {"realtimeInput": {"audio": {"data": "!!"}}}],
            "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES), \"!!\"",
        ),
    ],
)
async def test_invalid_input_closes_1007_with_googles_reason(
    nursery: trio.Nursery, frames: list[Any], reason: str
) -> None:
    assert await refused(nursery, *frames) == (1007, reason)


EXTENDED = "models/gemini-3.8-live-extended-thinking"
TRANSCRIBE = "models/gemini-3.5-transcribe-live"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            {"model": MODEL, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
            "thinking_config is not supported.",
        ),
        (
            {"model": MODEL, "proactivity": {"proactive_audio": False}},
            "proactive_audio is always enabled for this model: omit it.",
        ),
        (
            {"model": MODEL, "generation_config": {"enable_affective_dialog": True}},
            'Invalid JSON payload received. Unknown name "enable_affective_dialog" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            {"model": MODEL, "generationConfig": {"responseModalities": ["TEXT"]}},
            "The text content type (CONTENT_TYPE_TEXT) is not supported for this model "
            "configuration.",
        ),
        (
            {
                "model": EXTENDED,
                "generationConfig": {"thinkingConfig": {"thinkingLevel": "MINIMAL"}},
            },
            "'minimal' is not a supported thinking level for this model. Allowed values are: "
            "low, medium, high.",
        ),
        (
            {
                "model": EXTENDED,
                "tools": [{"function_declarations": [{"name": "f", "behavior": "BLOCKING"}]}],
            },
            "Function calling behavior BLOCKING is not supported for this model: "
            "declare functions NON_BLOCKING.",
        ),
        (
            {"model": TRANSCRIBE, "generationConfig": {"responseModalities": ["AUDIO"]}},
            "The audio content type (CONTENT_TYPE_AUDIO) is not supported for this model "
            "configuration.",
        ),
    ],
)
async def test_a_setup_the_model_refuses_closes_1007_with_its_reason(
    nursery: trio.Nursery, setup: dict[str, Any], reason: str
) -> None:
    # In either casing: the rules read the setup as the emulator normalised it.
    assert await refused(nursery, {"setup": setup}) == (1007, reason)


async def test_the_models_own_setups_are_accepted(nursery: trio.Nursery) -> None:
    emulator = await start(nursery)
    accepted: list[dict[str, Any]] = [
        {"model": MODEL, "proactivity": {"proactiveAudio": True}},
        {
            "model": MODEL,
            "tools": [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}],
        },
        {"model": EXTENDED, "generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH"}}},
        {"model": TRANSCRIBE, "generationConfig": {"responseModalities": ["TEXT"]}},
        {"model": TEXT_MODEL, "generationConfig": {"responseModalities": ["TEXT"]}},
    ]
    for setup in accepted:
        async with connect(emulator) as ws:
            await open_session(ws, **setup)
    assert len(emulator.connections) == len(accepted)


async def test_a_model_outside_googles_list_closes_1008_truncated_to_123_bytes(
    nursery: trio.Nursery,
) -> None:
    # A typo, as long as the spec's example (whose reason ends at exactly 123 bytes).
    model = "models/gemini-live-2.5-flash-previwe"
    code, reason = await refused(nursery, {"setup": {"model": model}})
    assert code == 1008
    assert reason == truncate_reason(model_not_found(model, "v1beta"))
    assert len(reason.encode()) == 123
    assert reason.endswith("bidiGenerateContent. Call")


@pytest.mark.parametrize("model", sorted(SHUT_DOWN["developer"]))
async def test_a_shut_down_model_closes_1008_not_found(nursery: trio.Nursery, model: str) -> None:
    name = f"models/{model}"
    code, reason = await refused(nursery, {"setup": {"model": name}})
    assert (code, reason) == (1008, truncate_reason(model_not_found(name, "v1beta")))


async def test_vertex_serves_its_own_list_and_refuses_the_rest_like_vertex(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery)
    vertex = {"Authorization": "Bearer t"}
    async with connect(emulator, VERTEX_PATH, headers=vertex) as ws:
        await open_session(ws, model=VERTEX_MODEL)
    async with connect(emulator, VERTEX_PATH, headers=vertex) as ws:
        await open_session(ws, model="publishers/google/models/gemini-3.8-live")
    developer_only = "projects/p/locations/l/publishers/google/models/gemini-live-2.5-flash-preview"
    async with connect(emulator, VERTEX_PATH, headers=vertex) as ws:
        await send(ws, {"setup": {"model": developer_only}})
        reason = await close_reason(ws)
    assert reason.code == 1008
    assert reason.reason == truncate_reason(vertex_not_found(developer_only))
    assert reason.reason.startswith(f"Publisher Model `{developer_only}`")


async def test_every_model_of_googles_lists_is_served(nursery: trio.Nursery) -> None:
    emulator = await start(nursery)
    for name in LIVE_MODELS["developer"]:
        async with connect(emulator) as ws:
            await open_session(ws, model=f"models/{name}")
    for name in LIVE_MODELS["vertex"]:
        async with connect(emulator, VERTEX_PATH, headers={"Authorization": "Bearer t"}) as ws:
            await open_session(ws, model=f"projects/p/locations/l/publishers/google/models/{name}")
    assert [record.model for record in emulator.connections] == [
        *(f"models/{name}" for name in LIVE_MODELS["developer"]),
        *(
            f"projects/p/locations/l/publishers/google/models/{name}"
            for name in LIVE_MODELS["vertex"]
        ),
    ]


async def test_extra_models_are_served_besides_googles(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, extra_models=["gemini-x"])
    for model in ("models/gemini-x", MODEL):
        async with connect(emulator) as ws:
            await open_session(ws, model=model)
    assert await refused(nursery, {"setup": {"model": "models/gemini-y"}}) == (
        1008,
        truncate_reason(model_not_found("models/gemini-y", "v1beta")),
    )


async def test_a_listed_tuple_replaces_googles_list(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, models=["gemini-x"])
    async with connect(emulator) as ws:
        await open_session(ws, model="models/gemini-x")
    code, _ = await refused(nursery, {"setup": {"model": MODEL}}, models=["gemini-x"])
    assert code == 1008


async def test_any_model_serves_every_well_formed_name(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, any_model=True)
    for model in ("models/gemini-live-test", "tunedModels/mine", "projects/p/x/models/y"):
        async with connect(emulator) as ws:
            await open_session(ws, model=model)
    code, _ = await refused(nursery, {"setup": {"model": "gemini-x"}}, any_model=True)
    assert code == 1008


async def test_setup_is_recorded_normalised_and_answered_in_a_binary_frame(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery)
    setup = {
        "model": TEXT_MODEL,
        "generation_config": {"response_modalities": ["TEXT"], "speech_config": {}},
        "tools": [{"function_declarations": [{"name": "f", "parameters": {"snake_key": 1}}]}],
        # int64 fields as a string or as a number
        "context_window_compression": {
            "trigger_tokens": "25600",
            "sliding_window": {"target_tokens": 12800},
        },
    }
    async with connect(emulator) as ws:
        await ws.send_message(orjson.dumps({"setup": setup}))  # a binary client frame
        frame = await ws.get_message()
        assert frame == b'{"setupComplete":{}}'
    (record,) = emulator.connections
    assert record.setup == {
        "model": TEXT_MODEL,
        "generationConfig": {"responseModalities": ["TEXT"], "speechConfig": {}},
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"snake_key": 1}}]}],
        "contextWindowCompression": {
            "triggerTokens": "25600",
            "slidingWindow": {"targetTokens": 12800},
        },
    }
    assert record.sent == [{"setupComplete": {}}]


async def test_text_frames_when_configured(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, send_binary=False)
    async with connect(emulator) as ws:
        await send(ws, {"setup": {"model": MODEL}})
        assert await ws.get_message() == '{"setupComplete":{}}'


async def test_vertex_setup_complete_carries_the_session_id(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator, VERTEX_PATH, headers={"Authorization": "Bearer t"}) as ws:
        body = await open_session(ws, model=VERTEX_MODEL)
        await send(ws, {"realtimeInput": {"text": "hi"}})
        usage = (await until_turn_complete(ws))[-1]["usageMetadata"]
    assert body == {"sessionId": emulator.connections[0].session_id}
    assert len(body["sessionId"]) == 16
    # Vertex names the response side of the usage "candidates".
    assert usage["candidatesTokenCount"] == usage["totalTokenCount"] - usage["promptTokenCount"]
    assert "responseTokenCount" not in usage


async def test_client_messages_are_normalised_in_either_casing(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    pcm = b"\xfb\xff\xbf" * 2  # "+/+/+/+/" in standard base64, "-_-_-_-_" URL-safe
    async with connect(emulator) as ws:
        await open_session(ws)
        await send(ws, audio_message(pcm, snake=True))
        await send(ws, audio_message(pcm), binary=True)
        await send(ws, {"client_content": {"turns": [{"role": "user", "parts": [{"text": "x"}]}]}})
        await send(ws, {"realtimeInput": {"audio_stream_end": True}})
        await send(ws, {"realtime_input": {"text": "ping"}})
        await receive(ws)
    (record,) = emulator.connections
    mime = "audio/pcm;rate=16000"
    assert record.received == [
        ("realtimeInput", {"audio": {"data": "-_-_-_-_", "mimeType": mime}}),
        ("realtimeInput", {"audio": {"data": "+/+/+/+/", "mimeType": mime}}),
        ("clientContent", {"turns": [{"role": "user", "parts": [{"text": "x"}]}]}),
        ("realtimeInput", {"audioStreamEnd": True}),
        ("realtimeInput", {"text": "ping"}),
    ]
    assert record.received_count == 5
