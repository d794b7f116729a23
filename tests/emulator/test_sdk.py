"""The official google-genai SDK holds sessions with the emulator (over TLS, as it insists).

The SDK runs on asyncio, so each scenario runs in a worker thread (``asyncio.run``) while the
emulator serves from the trio test; real time, fast speed.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from google import genai
from google.genai import errors, types

from liveproxy.emulator import Emulator, Faults
from liveproxy.protocol.closes import (
    API_KEY_INVALID,
    DEADLINE_EXPIRED,
    model_not_found,
    truncate_reason,
)
from tests.genai_sdk import TRANSCRIBED_AUDIO, in_asyncio, send_audio, weather_round_trip

from .helpers import silence16, start, tone16

KEY = "test-key"
MODEL = "gemini-3.8-live"  # in Google's list, which the emulator serves by default
#: A model that answers in TEXT (gemini-3.8-live outputs AUDIO only).
TEXT_MODEL = "gemini-3.1-flash-live-preview"
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
        live = client(emulator, context).aio.live
        async with live.connect(model=MODEL, config=TRANSCRIBED_AUDIO) as s:
            await send_audio(s, speech + silence16(0.2))
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
        async with client(emulator, context).aio.live.connect(model=TEXT_MODEL, config=config) as s:
            return await weather_round_trip(s)

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


# --- Each model's rules, as the SDK meets them (protocol/live_models.py).

EXTENDED = "gemini-3.8-live-extended-thinking"
TRANSCRIBE = "gemini-3.5-transcribe-live"
WEATHER = types.FunctionDeclaration(name="get_weather", description="weather")


def declared(behavior: types.Behavior | None = None) -> types.ToolListUnion:
    declaration = WEATHER.model_copy(update={"behavior": behavior})
    return [types.Tool(function_declarations=[declaration])]


@pytest.mark.parametrize(
    ("model", "config", "code", "reason"),
    [
        (
            MODEL,
            types.LiveConnectConfig(thinking_config=types.ThinkingConfig(thinking_budget=0)),
            1007,
            "thinking_config is not supported.",
        ),
        (
            MODEL,
            types.LiveConnectConfig(proactivity=types.ProactivityConfig(proactive_audio=False)),
            1007,
            "proactive_audio is always enabled for this model: omit it.",
        ),
        (
            MODEL,
            types.LiveConnectConfig(enable_affective_dialog=True),
            1007,
            'Invalid JSON payload received. Unknown name "enable_affective_dialog" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            MODEL,
            TEXT,
            1007,
            "The text content type (CONTENT_TYPE_TEXT) is not supported for this model "
            "configuration.",
        ),
        (
            EXTENDED,
            types.LiveConnectConfig(
                thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL)
            ),
            1007,
            "'minimal' is not a supported thinking level for this model. Allowed values are: "
            "low, medium, high.",
        ),
        (
            EXTENDED,
            types.LiveConnectConfig(tools=declared(types.Behavior.BLOCKING)),
            1007,
            "Function calling behavior BLOCKING is not supported for this model: "
            "declare functions NON_BLOCKING.",
        ),
        (
            TRANSCRIBE,
            types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO]),
            1007,
            "The audio content type (CONTENT_TYPE_AUDIO) is not supported for this model "
            "configuration.",
        ),
        (
            "gemini-2.0-flash-live-001",  # shut down
            types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO]),
            1008,
            truncate_reason(model_not_found("models/gemini-2.0-flash-live-001", "v1")),
        ),
        (
            "gemini-live-2.5-flash-preview",  # shut down
            TEXT,
            1008,
            truncate_reason(model_not_found("models/gemini-live-2.5-flash-preview", "v1")),
        ),
    ],
    ids=[
        "3.8-thinking",
        "3.8-proactive-off",
        "3.8-affective",
        "3.8-text",
        "extended-minimal",
        "extended-blocking",
        "transcribe-audio",
        "shut-down-2.0",
        "shut-down-2.5-preview",
    ],
)
async def test_a_setup_the_model_refuses_is_an_api_error(
    nursery: trio.Nursery,
    certificate: tuple[trustme.CA, Path, Path],
    model: str,
    config: types.LiveConnectConfig,
    code: int,
    reason: str,
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> errors.APIError:
        with pytest.raises(errors.APIError) as raised:
            async with client(emulator, context).aio.live.connect(model=model, config=config):
                pass
        return raised.value

    refused = await in_asyncio(scenario)
    assert (refused.code, refused.details) == (code, reason)
    (record,) = emulator.connections
    assert (record.close_code, record.close_reason) == (code, reason)


@pytest.mark.parametrize(
    ("model", "config"),
    [
        (
            EXTENDED,
            types.LiveConnectConfig(
                thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.HIGH)
            ),
        ),
        (MODEL, types.LiveConnectConfig(tools=declared(types.Behavior.NON_BLOCKING))),
        (MODEL, types.LiveConnectConfig(tools=declared(types.Behavior.BLOCKING))),
        (MODEL, types.LiveConnectConfig(proactivity=types.ProactivityConfig(proactive_audio=True))),
        (TEXT_MODEL, TEXT),
        (TEXT_MODEL, types.LiveConnectConfig(enable_affective_dialog=None)),
        (TRANSCRIBE, TEXT),
        (
            "gemini-2.5-flash-native-audio-preview-12-2025",
            types.LiveConnectConfig(
                enable_affective_dialog=True,
                proactivity=types.ProactivityConfig(proactive_audio=False),
            ),
        ),
    ],
    ids=[
        "extended-high",
        "3.8-non-blocking",
        "3.8-blocking",
        "3.8-proactive-on",
        "3.1-text",
        "3.1-plain",
        "transcribe-text",
        "2.5-affective-proactive",
    ],
)
async def test_a_setup_the_model_accepts_opens_a_session(
    nursery: trio.Nursery,
    certificate: tuple[trustme.CA, Path, Path],
    model: str,
    config: types.LiveConnectConfig,
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> None:
        async with client(emulator, context).aio.live.connect(model=model, config=config):
            pass

    await in_asyncio(scenario)
    (record,) = emulator.connections
    await record.wait_closed()
    assert record.model == f"models/{model}"
    assert record.sent[0] == {"setupComplete": {}}


async def test_a_non_blocking_call_and_its_result_when_idle(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> tuple[list[types.LiveServerMessage], str]:
        config = types.LiveConnectConfig(
            tools=declared(),  # NON_BLOCKING by default on gemini-3.8-live
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        async with client(emulator, context).aio.live.connect(model=MODEL, config=config) as s:
            await s.send_realtime_input(text='call get_weather {"city": "Oslo"}')
            call_turn = await collect_turn(s)  # ends at once: the model does not wait
            (message,) = [m for m in call_turn if m.tool_call]
            assert message.tool_call is not None
            assert message.tool_call.function_calls
            (call,) = message.tool_call.function_calls
            await s.send_tool_response(
                function_responses=[
                    types.FunctionResponse(
                        id=call.id,
                        name=call.name,
                        response={"tempC": 4},
                        scheduling=types.FunctionResponseScheduling.WHEN_IDLE,
                    )
                ]
            )
            result = await collect_turn(s)
        said = "".join(
            m.server_content.output_transcription.text or ""
            for m in result
            if m.server_content and m.server_content.output_transcription
        )
        return call_turn, said

    call_turn, said = await in_asyncio(scenario)
    assert [bool(m.tool_call) for m in call_turn] == [True, False]
    last = call_turn[-1].server_content
    assert last is not None
    assert last.turn_complete
    assert said == 'get_weather returned {"tempC":4}'
    (record,) = emulator.connections
    assert record.received[1][1]["functionResponses"][0]["scheduling"] == "WHEN_IDLE"


async def test_extended_thinking_in_progress_until_idle(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> list[types.LiveServerMessage]:
        config = types.LiveConnectConfig(
            thinking_config=types.ThinkingConfig(
                thinking_level=types.ThinkingLevel.HIGH, include_thoughts=True
            ),
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        async with client(emulator, context).aio.live.connect(model=EXTENDED, config=config) as s:
            await s.send_realtime_input(text="think about lunch")
            # The SDK reads on past a turnComplete that says IN_PROGRESS, up to IDLE.
            return await collect_turn(s)

    both = await in_asyncio(scenario)
    contents = [m.server_content for m in both if m.server_content]
    assert [c.interaction_status for c in contents if c.interaction_status] == [
        types.InteractionStatus.IN_PROGRESS,
        types.InteractionStatus.IN_PROGRESS,
        types.InteractionStatus.IDLE,
    ]
    assert sum(1 for c in contents if c.turn_complete) == 2
    said = "".join(c.output_transcription.text or "" for c in contents if c.output_transcription)
    assert said == 'Let me think.You said: "think about lunch"'
    thoughts = [
        part.text
        for c in contents
        if c.model_turn
        for part in c.model_turn.parts or []
        if part.thought
    ]
    assert thoughts == ['Thinking about: "think about lunch"']
    usage = both[-1].usage_metadata
    assert usage is not None
    assert usage.thoughts_token_count == 9


@pytest.mark.parametrize("scheduling", [None, types.FunctionResponseScheduling.SILENT])
async def test_extended_thinking_calls_a_tool_and_goes_on_after_turn_complete(
    nursery: trio.Nursery,
    certificate: tuple[trustme.CA, Path, Path],
    scheduling: types.FunctionResponseScheduling | None,
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> list[types.LiveServerMessage]:
        config = types.LiveConnectConfig(
            tools=declared(types.Behavior.NON_BLOCKING),
            output_audio_transcription=types.AudioTranscriptionConfig(),
        )
        seen: list[types.LiveServerMessage] = []
        async with client(emulator, context).aio.live.connect(model=EXTENDED, config=config) as s:
            await s.send_realtime_input(text="call get_weather")
            async for message in s.receive():  # on past turnComplete + IN_PROGRESS, to IDLE
                seen.append(message)
                if message.tool_call and message.tool_call.function_calls:
                    (call,) = message.tool_call.function_calls
                    response = types.FunctionResponse(
                        id=call.id, name=call.name, response={"tempC": 4}, scheduling=scheduling
                    )
                    await s.send_tool_response(function_responses=[response])
        return seen

    seen = await in_asyncio(scenario)
    contents = [m.server_content for m in seen if m.server_content]
    said = "".join(c.output_transcription.text or "" for c in contents if c.output_transcription)
    statuses = [c.interaction_status for c in contents if c.interaction_status]
    assert statuses[0] == types.InteractionStatus.IN_PROGRESS
    assert statuses[-1] == types.InteractionStatus.IDLE
    if scheduling is None:
        assert said == 'get_weather returned {"tempC":4}'
        assert sum(1 for c in contents if c.turn_complete) == 2
    else:  # SILENT: no turn; IDLE alone ends the interaction
        assert said == ""
        assert contents[-1].interaction_status == types.InteractionStatus.IDLE
        assert not contents[-1].turn_complete
