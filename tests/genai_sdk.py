"""Google's google-genai SDK in trio tests: it runs on asyncio, so a scenario runs in a worker
thread (``asyncio.run``), bounded in real time; and the exchanges several tests hold with it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from google.genai import types

SCENARIO_TIMEOUT = 20.0
#: 0.1 s of 16 kHz 16-bit PCM: one ``realtimeInput`` audio chunk.
AUDIO_CHUNK_BYTES = 3200
WEATHER_CALL = 'call get_weather {"location": "Tokyo"}'
#: Audio answers, both ways transcribed.
TRANSCRIBED_AUDIO = types.LiveConnectConfig(
    response_modalities=[types.Modality.AUDIO],
    input_audio_transcription=types.AudioTranscriptionConfig(),
    output_audio_transcription=types.AudioTranscriptionConfig(),
)


async def in_asyncio(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an asyncio ``scenario`` in a worker thread, bounded in real time."""

    async def bounded() -> Any:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            return await scenario()

    return await trio.to_thread.run_sync(asyncio.run, bounded())


async def send_audio(session: Any, pcm: bytes) -> None:
    """Send ``pcm`` (16 kHz) as realtime audio in 0.1 s chunks, then the audio stream's end."""
    for start_at in range(0, len(pcm), AUDIO_CHUNK_BYTES):
        blob = types.Blob(
            data=pcm[start_at : start_at + AUDIO_CHUNK_BYTES], mime_type="audio/pcm;rate=16000"
        )
        await session.send_realtime_input(audio=blob)
    await session.send_realtime_input(audio_stream_end=True)


async def weather_round_trip(session: Any) -> tuple[list[types.FunctionCall], str]:
    """Ask for :data:`WEATHER_CALL`, answer every call ``{"tempC": 21}``, and read to the end of
    the turn: the calls and the text said."""
    calls: list[types.FunctionCall] = []
    text = ""
    await session.send_realtime_input(text=WEATHER_CALL)
    async for message in session.receive():
        if message.tool_call and message.tool_call.function_calls:
            calls += message.tool_call.function_calls
            await session.send_tool_response(
                function_responses=[
                    types.FunctionResponse(id=call.id, name=call.name, response={"tempC": 21})
                    for call in message.tool_call.function_calls
                ]
            )
        text += message.text or ""
    return calls, text
