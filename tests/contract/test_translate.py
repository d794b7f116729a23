"""The hot-path mapping between browser frames and Gemini messages (pure, no I/O)."""

from __future__ import annotations

import base64

import orjson
import pytest

from liveproxy.contract.errors import BadMessage
from liveproxy.contract.translate import (
    AudioAligner,
    UpstreamDecodeError,
    audio_to_upstream,
    browser_text_to_upstream,
    inline_audio_bytes,
    translate_upstream,
    translate_upstream_native,
    with_session_stats,
)


def audio_part(pcm: bytes, alphabet: str = "standard") -> dict[str, object]:
    encode = base64.urlsafe_b64encode if alphabet == "urlsafe" else base64.b64encode
    return {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": encode(pcm).decode()}}


def message(*parts: dict[str, object], **content: object) -> bytes:
    return orjson.dumps({"serverContent": {"modelTurn": {"parts": list(parts)}, **content}})


def test_audio_to_upstream_is_a_realtime_input_audio_message() -> None:
    decoded = orjson.loads(audio_to_upstream(b"\x01\x02\x03\x04"))
    assert decoded == {
        "realtimeInput": {
            "audio": {
                "mimeType": "audio/pcm;rate=16000",
                "data": base64.b64encode(b"\x01\x02\x03\x04").decode(),
            }
        }
    }


def test_the_aligner_carries_an_odd_byte_into_the_next_frame() -> None:
    aligner = AudioAligner()
    assert aligner.align(b"abc") == b"ab"
    assert aligner.align(b"d") == b"cd"
    assert aligner.align(b"e") == b""
    assert aligner.align(b"fgh") == b"efgh"


def test_upstream_audio_parts_become_binary_frames_never_odd() -> None:
    aligner = AudioAligner()
    first = translate_upstream(message(audio_part(b"\x01\x02\x03")), aligner)
    second = translate_upstream(message(audio_part(b"\x04\x05\x06", "urlsafe")), aligner)
    assert first.frames == [b"\x01\x02"]
    assert second.frames == [b"\x03\x04\x05\x06"]
    assert first.generating


def test_text_parts_and_other_fields_stay_json_in_order_after_the_audio() -> None:
    raw = message(audio_part(b"\x01\x02"), {"text": "hi"}, outputTranscription={"text": "hi"})
    event = translate_upstream(raw, AudioAligner())
    assert event.frames[0] == b"\x01\x02"
    assert orjson.loads(event.frames[1]) == {
        "serverContent": {
            "modelTurn": {"parts": [{"text": "hi"}]},
            "outputTranscription": {"text": "hi"},
        }
    }


def test_messages_without_audio_pass_through_verbatim() -> None:
    raw = b'{"serverContent":{"turnComplete":true},"usageMetadata":{"totalTokenCount":9}}'
    event = translate_upstream(raw, AudioAligner())
    assert event.frames == [raw.decode()]
    assert event.turn_complete
    assert event.usage == {"totalTokenCount": 9}


def test_control_messages_are_reported_not_forwarded() -> None:
    aligner = AudioAligner()
    assert translate_upstream(b'{"setupComplete":{}}', aligner).frames == []
    go_away = translate_upstream(b'{"goAway":{"timeLeft":"50s"}}', aligner)
    assert (go_away.go_away, go_away.frames) == ("50s", [])
    update = translate_upstream(
        b'{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}', aligner
    )
    assert (update.resumption_handle, update.frames) == ("h1", [])
    not_resumable = translate_upstream(b'{"sessionResumptionUpdate":{"resumable":false}}', aligner)
    assert not_resumable.resumption_handle is None


def test_interrupted_and_tool_calls_are_flagged() -> None:
    aligner = AudioAligner()
    assert translate_upstream(b'{"serverContent":{"interrupted":true}}', aligner).interrupted
    call = translate_upstream(b'{"toolCall":{"functionCalls":[{"id":"1","name":"f"}]}}', aligner)
    assert call.tool_call == {"toolCall": {"functionCalls": [{"id": "1", "name": "f"}]}}
    assert call.frames == []
    stats = {"messageCount": 1, "audioChunksSent": 2, "elapsedSeconds": 0.5}
    framed = orjson.loads(with_session_stats(call.tool_call, stats))
    assert framed == dict(call.tool_call, sessionStats=stats)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", message({"inlineData": {"mimeType": "audio/pcm", "data": "!!!"}})],
)
def test_upstream_garbage_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(UpstreamDecodeError):
        translate_upstream(raw, AudioAligner())


def test_browser_native_messages_are_normalised_to_camel_case() -> None:
    frame = orjson.dumps(
        {"tool_response": {"function_responses": [{"id": "1", "response": {"a_b": 1}}]}}
    )
    assert orjson.loads(browser_text_to_upstream(frame.decode())) == {
        "toolResponse": {"functionResponses": [{"id": "1", "response": {"a_b": 1}}]}
    }


@pytest.mark.parametrize("frame", ['{"setup": {}}', '{"nope": 1}', "[]", '{"type": "x"}'])
def test_browser_bad_messages_raise_bad_message(frame: str) -> None:
    with pytest.raises(BadMessage):
        browser_text_to_upstream(frame)


@pytest.mark.parametrize(
    ("inline", "rate", "expected"),
    [
        (
            {"mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(b"x" * 3200).decode()},
            16000,
            3200,
        ),
        (
            {"mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(b"x" * 3201).decode()},
            16000,
            3201,
        ),  # padded
        (
            {
                "mimeType": "audio/pcm",
                "data": base64.urlsafe_b64encode(b"x" * 10).decode().rstrip("="),
            },
            16000,
            10,
        ),  # unpadded, no rate: taken as the metered rate
        (
            {"mimeType": "audio/pcm;rate=48000", "data": base64.b64encode(b"x" * 9600).decode()},
            24000,
            4800,
        ),  # twice the rate: half the metered bytes for the same duration
        ({"mimeType": "audio/pcm;rate=9999999", "data": "AAAA"}, 16000, 3),  # no such rate
        ({"mimeType": "image/jpeg", "data": "AAAA"}, 16000, 0),
        ({"mimeType": "audio/pcm", "data": 7}, 16000, 0),
        ("audio", 16000, 0),
    ],
)
def test_inline_audio_is_measured_without_decoding(
    inline: object, rate: int, expected: int
) -> None:
    assert inline_audio_bytes(inline, rate) == expected


def test_a_native_clients_audio_is_metered_as_it_passes() -> None:
    pcm = b"\x01\x00" * 1200
    raw = orjson.dumps(
        {"serverContent": {"modelTurn": {"parts": [audio_part(pcm), {"text": "hi"}]}}}
    )
    event = translate_upstream_native(raw)
    assert event.inline_audio_bytes == len(pcm)
    assert event.frames == [raw.decode()]  # passed on as Gemini sent it
