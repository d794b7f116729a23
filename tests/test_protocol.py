"""The shared Gemini wire rules: casing, base64, the client-message schema, close reasons."""

from __future__ import annotations

import pytest

from liveproxy.protocol.b64 import decode_b64, encode_b64
from liveproxy.protocol.casing import to_camel, to_snake
from liveproxy.protocol.closes import truncate_reason
from liveproxy.protocol.schema import SchemaError, parse_client_message


def test_casing_round_trips() -> None:
    assert to_camel("generation_config") == "generationConfig"
    assert to_camel("generationConfig") == "generationConfig"
    assert to_snake("startOfSpeechSensitivity") == "start_of_speech_sensitivity"


@pytest.mark.parametrize("text", ["_9j_", "/9j/", "_9g", "_9g=", "AAEAAQ"])
def test_base64_decodes_either_alphabet_padded_or_not(text: str) -> None:
    assert decode_b64(text) == decode_b64(text.replace("_", "/").replace("-", "+").rstrip("="))


def test_base64_refuses_garbage() -> None:
    for bad in ("!!!!", "A", "é"):
        with pytest.raises(ValueError, match="base64"):
            decode_b64(bad)
    assert encode_b64(b"\xff\xd8") == "/9g="


def test_close_reasons_are_cut_to_123_bytes_on_a_character_boundary() -> None:
    assert truncate_reason("x" * 200) == "x" * 123
    cut = truncate_reason("é" * 100)
    assert len(cut.encode()) <= 123
    assert cut == "é" * 61


def test_mixed_casing_is_normalised_except_inside_structs() -> None:
    kind, body = parse_client_message(
        {
            "tool_response": {
                "function_responses": [{"id": "1", "name": "f", "response": {"snake_key": 1}}]
            }
        }
    )
    assert kind == "toolResponse"
    assert body == {"functionResponses": [{"id": "1", "name": "f", "response": {"snake_key": 1}}]}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            {"setup": {"speechConfig": {}}},
            "Invalid JSON payload received. Unknown name \"speechConfig\" at 'setup': "
            "Cannot find field.",
        ),
        (
            {"setup": {"generation_config": {"inputAudioTranscription": {}}}},
            'Invalid JSON payload received. Unknown name "inputAudioTranscription" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            {"setup": {"tools": [{"functionDeclarations": [{"nme": "x"}]}]}},
            'Invalid JSON payload received. Unknown name "nme" at '
            "'setup.tools[0].function_declarations[0]': Cannot find field.",
        ),
        (
            {"setup": {"generationConfig": {"temperature": "hot"}}},
            "Invalid value at 'setup.generation_config.temperature' (TYPE_FLOAT), \"hot\"",
        ),
        (
            {"setup": {}, "clientContent": {}},
            "Invalid JSON payload received. Oneof field 'message_type' is already set. "
            "Cannot set 'clientContent'",
        ),
        ({"bogus": {}}, 'Invalid JSON payload received. Unknown name "bogus": Cannot find field.'),
        ({}, "Request contains an invalid argument."),
    ],
)
def test_google_style_reasons(message: dict[str, object], reason: str) -> None:
    with pytest.raises(SchemaError) as error:
        parse_client_message(message)
    assert error.value.reason == reason


def test_int64_accepts_numbers_and_strings() -> None:
    for value in (25600, "25600"):
        _, body = parse_client_message(
            {"setup": {"context_window_compression": {"trigger_tokens": value}}}
        )
        assert body["contextWindowCompression"]["triggerTokens"] == value
    with pytest.raises(SchemaError):
        parse_client_message({"setup": {"contextWindowCompression": {"triggerTokens": "many"}}})


def test_enums_are_checked_where_their_values_are_known() -> None:
    parse_client_message({"setup": {"generationConfig": {"responseModalities": ["TEXT"]}}})
    with pytest.raises(SchemaError, match="Modality"):
        parse_client_message({"setup": {"generationConfig": {"responseModalities": ["SMELL"]}}})
