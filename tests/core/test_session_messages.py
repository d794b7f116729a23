"""Every browser -> proxy message kind, and what the browser gets back, through the emulator.

The mapping rules themselves, with the exact JSON each produces, are plain sync tests in
tests/contract/test_mapping_rules.py; what is here needs the real path: a whole session, the
emulator's answers, state kept across frames, the first frame deciding the setup.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from liveproxy.emulator import ConnectionRecord
from liveproxy.protocol.b64 import decode_b64
from tests import pcm
from tests.conftest import AUDIO_SETUP, TEXT_SETUP, Proxy, ProxyFactory
from tests.contract.test_mapping_rules import BROWSER_SETUP, UPSTREAM_SETUP
from tests.wsclient import BrowserClient, has_key, texts, wait_until

FULL_SETUP: dict[str, Any] = {"setup": BROWSER_SETUP}


def upstream(proxy: Proxy) -> ConnectionRecord:
    return proxy.emulator.connections[-1]


async def received(proxy: Proxy, count: int) -> list[tuple[str, dict[str, Any]]]:
    record = upstream(proxy)
    await wait_until(lambda: len(record.received) >= count)
    return record.received[:count]


#: A model that accepts every field of FULL_SETUP (affective dialog among them).
NATIVE_AUDIO_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


async def test_setup_fields_pass_through_with_the_servers_additions(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(model=NATIVE_AUDIO_MODEL)
    async with proxy.session(FULL_SETUP):
        setup = upstream(proxy).setup
    # What browser_setup makes of it (the rules: tests/contract/test_mapping_rules.py), with the
    # model as the backend names it.
    assert setup == UPSTREAM_SETUP | {"model": f"models/{NATIVE_AUDIO_MODEL}"}


async def test_an_allowed_model_from_the_browser_is_used(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(allowed_models=frozenset({"gemini-3.1-flash-live-preview"}))
    async with proxy.session({"setup": {"model": "gemini-3.1-flash-live-preview"}}):
        assert upstream(proxy).model == "models/gemini-3.1-flash-live-preview"


async def test_compression_can_be_left_to_the_browser(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(context_window_compression=False)
    async with proxy.session():
        sent = upstream(proxy).setup
    assert sent is not None
    assert "contextWindowCompression" not in sent


async def test_text_turns_in_every_form_reach_upstream_and_get_answers(proxy: Proxy) -> None:
    async with proxy.session() as client:
        for message in (
            orjson.dumps({"type": "text", "text": "one"}).decode(),
            "two, as plain text",
            orjson.dumps(
                {
                    "client_content": {
                        "turns": [{"role": "user", "parts": [{"text": "three"}]}],
                        "turn_complete": True,
                    }
                }
            ).decode(),
            orjson.dumps({"realtimeInput": {"text": "four"}}).decode(),
        ):
            await client.ws.send_message(message)
            answer = await client.recv_until(has_key("serverContent", "turnComplete"))
            assert texts(answer), answer
        got = await received(proxy, 4)
    assert got[0] == (
        "clientContent",
        {"turns": [{"role": "user", "parts": [{"text": "one"}]}], "turnComplete": True},
    )
    assert got[1][1]["turns"][0]["parts"][0]["text"] == "two, as plain text"
    assert got[2][1]["turns"][0]["parts"][0]["text"] == "three"
    assert got[3] == ("realtimeInput", {"text": "four"})


async def test_odd_length_audio_is_carried_so_samples_stay_aligned(proxy: Proxy) -> None:
    audio = bytes(range(1, 10))  # 9 bytes in frames of 3, 3, 3
    async with proxy.session() as client:
        for i in range(0, 9, 3):
            await client.ws.send_message(audio[i : i + 3])
        got = await received(proxy, 2)
    chunks = [decode_b64(body["audio"]["data"]) for _, body in got]
    assert [len(c) for c in chunks] == [2, 4]
    assert b"".join(chunks) == audio[:6]
    assert {body["audio"]["mimeType"] for _, body in got} == {"audio/pcm;rate=16000"}


async def speak(client: BrowserClient, seconds: float) -> None:
    for frame in pcm.frames(pcm.speech(seconds) + pcm.silence(1.0)):
        await client.ws.send_message(frame)


async def test_an_audio_turn_returns_even_binary_audio_and_transcriptions(proxy: Proxy) -> None:
    async with proxy.session(AUDIO_SETUP) as client:
        await speak(client, 1.0)
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    audio = [f for f in frames if isinstance(f, bytes)]
    events = [orjson.loads(f) for f in frames if isinstance(f, str)]
    assert audio
    assert all(len(a) % 2 == 0 for a in audio)
    # The emulator answers with the utterance resampled to 24 kHz: 1.5 bytes out per byte in.
    assert sum(map(len, audio)) == pytest.approx(1.5 * 32000, rel=0.25)
    contents = [e["serverContent"] for e in events if "serverContent" in e]
    assert any("inputTranscription" in c for c in contents)
    assert any("outputTranscription" in c for c in contents)
    assert not any("modelTurn" in c for c in contents)  # audio never comes as JSON
    assert contents[-1] == {"turnComplete": True}
    assert any("usageMetadata" in e for e in events)


async def test_a_tool_call_carries_session_stats_and_its_response_continues_the_turn(
    proxy: Proxy,
) -> None:
    async with proxy.session(
        {"setup": FULL_SETUP["setup"] | {"generation_config": {"response_modalities": ["TEXT"]}}}
    ) as client:
        await client.send_json({"type": "text", "text": 'call get_weather {"location":"Tokyo"}'})
        [call_frame] = [
            f for f in await client.recv_until(has_key("toolCall")) if has_key("toolCall")(f)
        ]
        call = orjson.loads(call_frame)
        assert set(call["sessionStats"]) == {"messageCount", "audioChunksSent", "elapsedSeconds"}
        function_call = call["toolCall"]["functionCalls"][0]
        assert function_call["name"] == "get_weather"
        assert function_call["args"] == {"location": "Tokyo"}
        await client.send_json(
            {
                "tool_response": {
                    "function_responses": [
                        {
                            "id": function_call["id"],
                            "name": "get_weather",
                            "response": {"tempC": 21},
                        }
                    ]
                }
            }
        )
        answer = await client.recv_until(has_key("serverContent", "turnComplete"))
    text = "".join(texts(answer))
    assert "21" in text


# Which frames are refused, and the exact reasons: tests/contract/test_mapping_rules.py. Here,
# one refusal from each place that refuses: the reader answers it and the session goes on.
@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        # The mapping, the schema, the reader itself.
        ("[1, 2, 3]", "must be an object"),
        ('{"realtime_input": {"audio": {"data": 5}}}', "realtime_input"),
        (b"", "empty binary frame"),
    ],
)
async def test_bad_messages_get_bad_message_and_the_session_goes_on(
    proxy: Proxy, frame: str | bytes, fragment: str
) -> None:
    async with proxy.session() as client:
        await client.ws.send_message(frame)
        error = (await client.recv_json())["error"]
        assert error["code"] == "bad_message"
        assert fragment in error["message"]
        await client.send_json({"type": "text", "text": "still here?"})
        await client.recv_until(has_key("serverContent", "turnComplete"))


async def test_a_browser_that_starts_streaming_gets_the_default_setup(proxy: Proxy) -> None:
    async with proxy.connect() as client:
        await client.ws.send_message(pcm.speech(0.1))
        assert await client.recv_json() == {"setupComplete": {}}
        got = await received(proxy, 1)
        setup = upstream(proxy).setup
    assert setup is not None
    assert setup["generationConfig"] == {"responseModalities": ["AUDIO"]}
    assert "inputAudioTranscription" in setup
    assert "outputAudioTranscription" in setup
    assert got[0][0] == "realtimeInput"
    assert "audio" in got[0][1]


async def test_a_plain_text_first_frame_is_a_turn_with_the_default_setup(proxy: Proxy) -> None:
    async with proxy.connect() as client:
        await client.ws.send_message("hello from an old client")
        assert await client.recv_json() == {"setupComplete": {}}
        got = await received(proxy, 1)
    assert got[0][1]["turns"][0]["parts"][0]["text"] == "hello from an old client"


async def test_barge_in_passes_interrupted_on(proxy: Proxy) -> None:
    async with proxy.session(AUDIO_SETUP) as client:
        await client.send_json({"type": "text", "text": "tell me a long story " * 20})
        await client.recv_until(lambda f: isinstance(f, bytes))
        await speak(client, 0.5)
        frames = await client.recv_until(has_key("serverContent", "interrupted"))
        assert frames
        tail = await client.recv_until(has_key("serverContent", "turnComplete"))
    contents = [
        orjson.loads(f)["serverContent"]
        for f in tail
        if isinstance(f, str) and "serverContent" in orjson.loads(f)
    ]
    assert not any(c.get("generationComplete") for c in contents)


async def test_text_setup_is_answered_in_text(proxy: Proxy) -> None:
    async with proxy.session(TEXT_SETUP) as client:
        await client.send_json({"type": "text", "text": "ping"})
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    assert not any(isinstance(f, bytes) for f in frames)
