"""Client-side helpers for the emulator tests: a trio-websocket client speaking Gemini Live."""

from __future__ import annotations

import array
import base64
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, open_websocket_url

from liveproxy.emulator import Emulator, EmulatorConfig, serve

DEV_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
VERTEX_PATH = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
KEYED_PATH = DEV_PATH + "?key=test-key"
#: Google's GA Live model (the proxy's default): served by the emulator's default list.
MODEL = "models/gemini-3.8-live"
#: A Developer API model that answers in TEXT, for the tests of TEXT modality: gemini-3.8-live
#: outputs AUDIO only (and no Vertex model converses in TEXT).
TEXT_MODEL = "models/gemini-3.1-flash-live-preview"
#: A Vertex model from Google's list, spelt as the SDK sends it with a project and location
#: (the proxy's Vertex default).
VERTEX_MODEL = "projects/p/locations/l/publishers/google/models/gemini-live-2.5-flash-native-audio"
#: Guard against hung tests: no single wait in these tests is legitimately longer (trio time).
RECEIVE_TIMEOUT = 30.0

Message = dict[str, Any]


async def start(nursery: trio.Nursery, **config: Any) -> Emulator:
    """Start an emulator on a free port with ``EmulatorConfig(**config)``."""
    emulator: Emulator = await nursery.start(serve, EmulatorConfig(**config))
    return emulator


@asynccontextmanager
async def connect(
    emulator: Emulator, path: str = KEYED_PATH, headers: dict[str, str] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket to ``emulator`` at ``path``."""
    extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    async with open_websocket_url(
        emulator.url + path, extra_headers=extra, max_message_size=8 * 2**20
    ) as ws:
        yield ws


async def send(ws: WebSocketConnection, message: Message, *, binary: bool = False) -> None:
    data = orjson.dumps(message)
    await ws.send_message(data if binary else data.decode())


async def receive(ws: WebSocketConnection) -> Message:
    """The next server message, decoded; fails after :data:`RECEIVE_TIMEOUT`."""
    with trio.fail_after(RECEIVE_TIMEOUT):
        frame = await ws.get_message()
    message: Message = orjson.loads(frame)
    return message


async def open_session(ws: WebSocketConnection, **setup: Any) -> Message:
    """Send a setup (``model`` defaults to :data:`MODEL`), expect ``setupComplete`` first and
    return its body."""
    await send(ws, {"setup": {"model": MODEL, **setup}})
    message = await receive(ws)
    assert list(message) == ["setupComplete"]
    body: Message = message["setupComplete"]
    return body


async def until_turn_complete(ws: WebSocketConnection) -> list[Message]:
    """Every message up to and including the next ``turnComplete``."""
    got: list[Message] = []
    while True:
        message = await receive(ws)
        got.append(message)
        if message.get("serverContent", {}).get("turnComplete"):
            return got


async def close_reason(ws: WebSocketConnection) -> CloseReason:
    """Read until the server closes (within :data:`RECEIVE_TIMEOUT`); return its close code
    and reason."""
    reason: CloseReason | None = None
    try:
        with trio.fail_after(RECEIVE_TIMEOUT):
            while True:
                await ws.get_message()
    except ConnectionClosed as exc:
        reason = exc.reason
    assert reason is not None
    return reason


def tone16(seconds: float, amplitude: int = 8000) -> bytes:
    """A 300 Hz sine, PCM16 at 16 kHz."""
    count = int(seconds * 16_000)
    return array.array(
        "h", (round(amplitude * math.sin(2 * math.pi * 300 * i / 16_000)) for i in range(count))
    ).tobytes()


def silence16(seconds: float) -> bytes:
    return bytes(2 * int(seconds * 16_000))


def audio_message(pcm: bytes, *, rate: int = 16_000, snake: bool = False) -> Message:
    """A ``realtimeInput.audio`` message; ``snake`` spells it like the Python SDK (URL-safe
    base64, snake_case keys)."""
    if snake:
        data = base64.urlsafe_b64encode(pcm).decode()
        return {"realtime_input": {"audio": {"data": data, "mime_type": f"audio/pcm;rate={rate}"}}}
    data = base64.b64encode(pcm).decode()
    return {"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={rate}"}}}


async def send_audio(ws: WebSocketConnection, pcm: bytes, chunk: int = 3200) -> None:
    """Send ``pcm`` in 100 ms messages (no pacing)."""
    for start in range(0, len(pcm), chunk):
        await send(ws, audio_message(pcm[start : start + chunk]))


def server_content(messages: list[Message], field: str) -> list[Any]:
    """The values of ``serverContent.<field>`` across ``messages``."""
    return [m["serverContent"][field] for m in messages if field in m.get("serverContent", {})]


def model_audio(messages: list[Message]) -> bytes:
    """The model's audio in ``messages``, concatenated; checks each part's mime type."""
    out = b""
    for turn in server_content(messages, "modelTurn"):
        for part in turn["parts"]:
            if "inlineData" in part:
                assert part["inlineData"]["mimeType"] == "audio/pcm;rate=24000"
                out += base64.b64decode(part["inlineData"]["data"], validate=True)
    return out


def model_text(messages: list[Message]) -> str:
    return "".join(
        part.get("text", "")
        for turn in server_content(messages, "modelTurn")
        for part in turn["parts"]
    )


def transcript(messages: list[Message], field: str) -> str:
    """The concatenated ``inputTranscription`` / ``outputTranscription`` texts."""
    return "".join(item["text"] for item in server_content(messages, field))


def kinds(messages: list[Message]) -> list[str]:
    """A compact trace: top-level key, or ``serverContent.<field>`` for server content."""
    out: list[str] = []
    for message in messages:
        for key, value in message.items():
            if key == "serverContent":
                out.extend(value)
            elif key != "usageMetadata":
                out.append(key)
    return out
