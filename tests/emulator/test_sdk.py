"""The official google-genai SDK holds sessions with the emulator (over TLS, as it insists).

The SDK runs on asyncio, so each scenario runs in a worker thread (``asyncio.run``) while the
emulator serves from the trio test; real time, fast speed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from google import genai
from google.genai import errors, types

from liveproxy.emulator import Emulator, Faults
from liveproxy.protocol.closes import API_KEY_INVALID, DEADLINE_EXPIRED

from .helpers import silence16, start, tone16

KEY = "test-key"
MODEL = "gemini-3.8-live"  # in Google's list, which the emulator serves by default
#: A model that answers in TEXT (gemini-3.8-live outputs AUDIO only).
TEXT_MODEL = "gemini-3.1-flash-live-preview"
SCENARIO_TIMEOUT = 20.0
TEXT = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    return ca, cert, key


async def start_tls(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path], **config: Any
) -> tuple[Emulator, ssl.SSLContext]:
    ca, cert, key = certificate
    emulator = await start(
        nursery, tls_cert=str(cert), tls_key=str(key), speed="fast", api_keys=[KEY], **config
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return emulator, context


def client(emulator: Emulator, context: ssl.SSLContext, key: str = KEY) -> genai.Client:
    assert emulator.url.startswith("wss://")
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            base_url=f"https://127.0.0.1:{emulator.port}", async_client_args={"ssl": context}
        ),
    )


async def in_asyncio(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an asyncio ``scenario`` in a worker thread, bounded in real time."""

    async def bounded() -> Any:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            return await scenario()

    return await trio.to_thread.run_sync(asyncio.run, bounded())


async def collect_turn(session: Any) -> list[types.LiveServerMessage]:
    return [message async for message in session.receive()]


async def test_text_turn(nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> list[types.LiveServerMessage]:
        async with client(emulator, context).aio.live.connect(model=TEXT_MODEL, config=TEXT) as s:
            await s.send_client_content(turns={"role": "user", "parts": [{"text": "hello"}]})
            return await collect_turn(s)

    turn = await in_asyncio(scenario)
    assert "".join(m.text or "" for m in turn) == 'You said: "hello"'
    assert turn[-1].server_content is not None
    assert turn[-1].server_content.turn_complete
    assert turn[-1].usage_metadata is not None
    assert turn[-1].usage_metadata.total_token_count
    (record,) = emulator.connections
    assert (
        record.path == "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    )
    assert (record.credential, record.credential_kind) == (KEY, "api_key")
    assert record.received[0][0] == "clientContent"


async def test_audio_turn_with_transcriptions(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)
    speech = tone16(0.8)

    async def scenario() -> list[types.LiveServerMessage]:
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            input_audio_transcription=types.AudioTranscriptionConfig(),
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        async with client(emulator, context).aio.live.connect(model=MODEL, config=config) as s:
            pcm = speech + silence16(0.2)
            for start_at in range(0, len(pcm), 3200):
                blob = types.Blob(
                    data=pcm[start_at : start_at + 3200], mime_type="audio/pcm;rate=16000"
                )
                await s.send_realtime_input(audio=blob)
            await s.send_realtime_input(audio_stream_end=True)
            return await collect_turn(s)

    turn = await in_asyncio(scenario)
    contents = [m.server_content for m in turn if m.server_content is not None]
    heard = "".join(c.input_transcription.text or "" for c in contents if c.input_transcription)
    said = "".join(c.output_transcription.text or "" for c in contents if c.output_transcription)
    audio = b"".join(m.data or b"" for m in turn)
    assert heard == "[speech 0.80 s]"
    assert said == "You said: [speech 0.80 s]"
    assert len(audio) == len(speech) * 3 // 2
    assert any(c.generation_complete for c in contents)


async def test_tool_call_and_response(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> tuple[list[types.FunctionCall], str]:
        declaration = types.FunctionDeclaration(name="get_weather", description="weather")
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.TEXT],
            tools=[types.Tool(function_declarations=[declaration])],
        )
        calls: list[types.FunctionCall] = []
        text = ""
        async with client(emulator, context).aio.live.connect(model=TEXT_MODEL, config=config) as s:
            await s.send_realtime_input(text='call get_weather {"location": "Tokyo"}')
            async for message in s.receive():
                if message.tool_call and message.tool_call.function_calls:
                    calls += message.tool_call.function_calls
                    await s.send_tool_response(
                        function_responses=[
                            types.FunctionResponse(
                                id=call.id, name=call.name, response={"tempC": 21}
                            )
                            for call in message.tool_call.function_calls
                        ]
                    )
                text += message.text or ""
        return calls, text

    calls, text = await in_asyncio(scenario)
    (call,) = calls
    assert (call.name, call.args) == ("get_weather", {"location": "Tokyo"})
    assert call.id
    assert text == 'get_weather returned {"tempC":21}'


async def test_session_resumption(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> str:
        genai_client = client(emulator, context)
        config = TEXT.model_copy(update={"session_resumption": types.SessionResumptionConfig()})
        async with genai_client.aio.live.connect(model=TEXT_MODEL, config=config) as s:
            await s.send_realtime_input(text="remember me")
            await collect_turn(s)
            update = await anext(s.receive())
            assert update.session_resumption_update is not None
            handle = update.session_resumption_update.new_handle
            assert handle
        resumption = types.SessionResumptionConfig(handle=handle)
        resumed = TEXT.model_copy(update={"session_resumption": resumption})
        async with genai_client.aio.live.connect(model=TEXT_MODEL, config=resumed) as s:
            await s.send_realtime_input(text="again")
            turn = await collect_turn(s)
        return "".join(m.text or "" for m in turn)

    assert await in_asyncio(scenario) == 'You said: "again"'
    first, second = emulator.connections
    assert second.session_id == first.session_id


async def test_close_codes_surface_as_api_errors(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def connect_with(key: str, model: str) -> errors.APIError:
        with pytest.raises(errors.APIError) as raised:
            async with client(emulator, context, key).aio.live.connect(model=model):
                pass
        return raised.value

    async def scenario() -> tuple[errors.APIError, errors.APIError]:
        return await connect_with("wrong-key", MODEL), await connect_with(KEY, "other-model")

    wrong_key, unknown_model = await in_asyncio(scenario)
    # The SDK keeps the close reason in ``details``.
    assert (wrong_key.code, wrong_key.details) == (1007, API_KEY_INVALID)
    assert unknown_model.code == 1008
    assert unknown_model.details.startswith("models/other-model is not found")


async def test_mid_session_close_and_lifetime_end_surface_as_api_errors(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate, lifetime_seconds=0.5)
    emulator.queue_faults(Faults(close_after=1))

    async def receive_until_error(text: str | None) -> tuple[list[str], errors.APIError]:
        seen: list[str] = []
        with pytest.raises(errors.APIError) as raised:  # noqa: PT012
            async with client(emulator, context).aio.live.connect(
                model=TEXT_MODEL, config=TEXT
            ) as s:
                if text is not None:
                    await s.send_realtime_input(text=text)
                while True:
                    async for message in s.receive():
                        if message.go_away is not None and message.go_away.time_left:
                            seen.append(message.go_away.time_left)
        return seen, raised.value

    async def scenario() -> tuple[tuple[list[str], errors.APIError], ...]:
        return await receive_until_error("hi"), await receive_until_error(None)

    (_, closed), (seen, expired) = await in_asyncio(scenario)
    assert (closed.code, closed.details) == (1011, "Internal error encountered.")
    assert (expired.code, expired.details) == (1011, DEADLINE_EXPIRED)
    (time_left,) = seen  # the time actually left once setupComplete was out
    assert time_left.endswith("s")
    assert 0 < float(time_left[:-1]) <= 0.5
