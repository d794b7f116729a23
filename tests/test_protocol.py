"""The shared Gemini wire rules: casing, base64, the client-message schema, close reasons."""

from __future__ import annotations

import orjson
import pytest

from liveproxy.protocol import casing
from liveproxy.protocol.b64 import decode_b64, encode_b64
from liveproxy.protocol.casing import to_camel, to_snake
from liveproxy.protocol.closes import truncate_reason
from liveproxy.protocol.gemini_messages import SETUP, parse_client_message
from liveproxy.protocol.schema import MAX_DEPTH, Scalar, SchemaError, declare, normalise


def test_casing_round_trips() -> None:
    assert to_camel("generation_config") == "generationConfig"
    assert to_camel("generationConfig") == "generationConfig"
    assert to_snake("startOfSpeechSensitivity") == "start_of_speech_sensitivity"


def test_only_short_names_are_cached() -> None:
    long_name = "made_up_" + "k" * 100_000
    before = (casing._camel.cache_info().currsize, casing._snake.cache_info().currsize)
    assert to_camel(long_name) == "madeUp" + "K" + "k" * 99_999
    assert to_snake(long_name.upper())[:4] == "_m_a"
    after = (casing._camel.cache_info().currsize, casing._snake.cache_info().currsize)
    assert after == before  # a client's long names are never held by the caches
    to_camel("short_name")
    assert casing._camel.cache_info().currsize >= 1


def test_a_refusal_repeats_at_most_64_characters_of_a_clients_name() -> None:
    with pytest.raises(SchemaError) as refused:
        parse_client_message({"setup": {"k" * 100_000: 1}})
    assert refused.value.reason == (
        f"Invalid JSON payload received. Unknown name \"{'k' * 64}...\" at 'setup': "
        "Cannot find field."
    )


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


def test_two_message_types_with_one_name_keep_their_own_fields() -> None:
    first = declare("Same", lambda: {"a": Scalar.STRING})
    second = declare("Same", lambda: {"b": Scalar.BOOL})
    assert normalise(first, {"a": "x"}, "m") == {"a": "x"}
    assert normalise(second, {"b": True}, "m") == {"b": True}
    with pytest.raises(SchemaError, match='Unknown name "a"'):
        normalise(second, {"a": "x"}, "m")


def _nested(levels: int, leaf: object = 1) -> dict[str, object]:
    """``{"k": {"k": ... leaf}}``: ``levels`` objects deep (built without recursion)."""
    value: object = leaf
    for _ in range(levels):
        value = {"k": value}
    assert isinstance(value, dict)
    return value


def _depth(value: object) -> int:
    """How many levels of objects and arrays ``value`` nests (0 for a scalar)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return deepest


def _free_form_bodies(levels: int) -> list[tuple[str, dict[str, object], str]]:
    """Client messages whose body nests exactly ``levels`` deep, through each kind of free-form
    value: (kind, body, the path the reason names)."""
    # Levels: body 1, tools 2, Tool 3, functionDeclarations 4, FunctionDeclaration 5, then ours.
    parameters = {"name": "f", "parameters": _nested(levels - 5)}
    json_schema = {"name": "f", "parametersJsonSchema": [_nested(levels - 6)]}
    # Levels: body 1, functionResponses 2, FunctionResponse 3, then ours.
    response = {"name": "f", "response": _nested(levels - 3)}
    # Levels: body 1, turns 2, Content 3, parts 4, Part 5, FunctionCall 6, then ours.
    call = {"name": "f", "args": _nested(levels - 6)}
    declarations = "setup.tools[0].function_declarations[0]"
    return [
        (
            "setup",
            {"tools": [{"functionDeclarations": [parameters]}]},
            f"{declarations}.parameters",
        ),
        (
            "setup",
            {"tools": [{"functionDeclarations": [json_schema]}]},
            f"{declarations}.parameters_json_schema",
        ),
        (
            "toolResponse",
            {"functionResponses": [response]},
            "tool_response.function_responses[0].response",
        ),
        (
            "clientContent",
            {"turns": [{"parts": [{"functionCall": call}]}]},
            "client_content.turns[0].parts[0].function_call.args",
        ),
    ]


def test_bodies_nested_max_depth_levels_are_accepted() -> None:
    assert MAX_DEPTH == 64
    for kind, body, _ in _free_form_bodies(MAX_DEPTH):
        assert _depth(body) == MAX_DEPTH
        assert parse_client_message({kind: body}) == (kind, body)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 5000])
def test_bodies_nested_deeper_are_refused_without_recursion(levels: int) -> None:
    for kind, body, path in _free_form_bodies(levels):
        assert _depth(body) == levels
        with pytest.raises(SchemaError) as error:
            parse_client_message({kind: body})
        assert error.value.reason == (
            f"Invalid JSON payload received. Value nested deeper than 64 levels at '{path}'."
        )


def test_a_bare_setup_body_is_bounded_as_in_a_client_message() -> None:
    """``browser_setup`` normalises a bare setup body: it must agree with the full message."""
    (_, accepted, _), *_ = _free_form_bodies(MAX_DEPTH)
    assert normalise(SETUP, accepted, "setup") == parse_client_message({"setup": accepted})[1]
    (_, refused, _), *_ = _free_form_bodies(MAX_DEPTH + 1)
    with pytest.raises(SchemaError, match="nested deeper than 64 levels"):
        normalise(SETUP, refused, "setup")


def test_an_ill_typed_deep_value_is_refused_as_too_deep() -> None:
    """Showing the value in the reason would walk it (``orjson.dumps`` gives up at 254 levels)."""
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(SchemaError, match=r"nested deeper than 64 levels at 'setup\.model'"):
        parse_client_message({"setup": {"model": deep}})
    shallow = [[[1]]]
    with pytest.raises(
        SchemaError, match=r"Invalid value at 'setup.model' \(TYPE_STRING\), \[\[\[1"
    ):
        parse_client_message({"setup": {"model": shallow}})


def test_a_json_frame_nested_beyond_max_depth_is_refused() -> None:
    frame = '{"toolResponse":{"functionResponses":[{"response":' + '{"k":' * 900 + "1"
    frame += "}" * 900 + "}]}}"
    with pytest.raises(SchemaError, match="nested deeper than 64 levels"):
        parse_client_message(orjson.loads(frame))
