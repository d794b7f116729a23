"""Every browser <-> Gemini mapping rule, one pure function call each, with the exact JSON out.

These are the rules tests/core/test_session_messages.py used to check only end to end, through
Hypercorn and the emulator; the emulator normalises what it receives to camelCase, so only here
does a test see the exact text the proxy sends upstream. Every message the mapping produces is
also checked against the Gemini schema the emulator (and Gemini) applies.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from liveproxy.config import Config
from liveproxy.contract.errors import BadMessage, InvalidSetup
from liveproxy.contract.session_setup import (
    SetupPolicy,
    browser_setup,
    default_setup,
    upstream_setup_message,
)
from liveproxy.contract.translate import (
    AudioAligner,
    UpstreamEvent,
    audio_to_upstream,
    browser_text_to_upstream,
    translate_upstream,
    with_session_stats,
)
from liveproxy.protocol.gemini_messages import parse_client_message

#: A model the rules table does not know: the mapping is tested without any model's rules.
SERVER_MODEL = "gemini-live-under-test"
POLICY = SetupPolicy(SERVER_MODEL)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode()


def compact(value: Any) -> str:
    """``value`` as the proxy writes JSON: orjson, no spaces, keys in the order given."""
    return orjson.dumps(value).decode()


def valid_upstream(text: str) -> str:
    """``text``, after checking it is one client message Gemini accepts exactly as written:
    camelCase already, so the schema's normalised copy is the message itself."""
    message = orjson.loads(text)
    kind, body = parse_client_message(message)
    assert message == {kind: body}
    return text


def user_turn(text: str) -> dict[str, Any]:
    return {
        "clientContent": {
            "turns": [{"role": "user", "parts": [{"text": text}]}],
            "turnComplete": True,
        }
    }


# Browser text frames -> upstream ------------------------------------------------------------

SEND_RULES: list[tuple[str, Any, dict[str, Any]]] = [
    ("typed text", {"type": "text", "text": "one"}, user_turn("one")),
    ("plain text is a turn", "two, as plain text", user_turn("two, as plain text")),
    ("text that is not JSON", '{"setup": oops', user_turn('{"setup": oops')),
    (
        "image, JPEG by default",
        {"type": "image", "data": JPEG},
        {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": JPEG}}},
    ),
    (
        "image with mime_type",
        {"type": "image", "data": JPEG, "mime_type": "image/png"},
        {"realtimeInput": {"video": {"mimeType": "image/png", "data": JPEG}}},
    ),
    (
        "image with mimeType, URL-safe unpadded data passed on as sent",
        {"type": "image", "data": "_9j_4A", "mimeType": "image/webp"},
        {"realtimeInput": {"video": {"mimeType": "image/webp", "data": "_9j_4A"}}},
    ),
    (
        "audio_stream_end",
        {"type": "audio_stream_end"},
        {"realtimeInput": {"audioStreamEnd": True}},
    ),
    ("activity_start", {"type": "activity_start"}, {"realtimeInput": {"activityStart": {}}}),
    ("activity_end", {"type": "activity_end"}, {"realtimeInput": {"activityEnd": {}}}),
    (
        "client_content in snake_case",
        {
            "client_content": {
                "turns": [{"role": "user", "parts": [{"text": "three"}]}],
                "turn_complete": True,
            }
        },
        {
            "clientContent": {
                "turns": [{"role": "user", "parts": [{"text": "three"}]}],
                "turnComplete": True,
            }
        },
    ),
    (
        "realtimeInput text",
        {"realtimeInput": {"text": "four"}},
        {"realtimeInput": {"text": "four"}},
    ),
    (
        "realtime_input media_chunks",
        {"realtime_input": {"media_chunks": [{"mime_type": "image/png", "data": JPEG}]}},
        {"realtimeInput": {"mediaChunks": [{"mimeType": "image/png", "data": JPEG}]}},
    ),
    (
        "tool_response in snake_case: the response Struct keeps its keys",
        {
            "tool_response": {
                "function_responses": [
                    {
                        "id": "call-1",
                        "name": "get_weather",
                        "response": {"temp_c": 21, "feelsLike": {"wind_kph": 3}},
                        "will_continue": False,
                    }
                ]
            }
        },
        {
            "toolResponse": {
                "functionResponses": [
                    {
                        "id": "call-1",
                        "name": "get_weather",
                        "response": {"temp_c": 21, "feelsLike": {"wind_kph": 3}},
                        "willContinue": False,
                    }
                ]
            }
        },
    ),
    (
        "toolResponse in camelCase passes unchanged",
        {
            "toolResponse": {
                "functionResponses": [{"id": "1", "response": {"a_b": [1, {"c_d": 2}]}}]
            }
        },
        {
            "toolResponse": {
                "functionResponses": [{"id": "1", "response": {"a_b": [1, {"c_d": 2}]}}]
            }
        },
    ),
    (
        "mixed casing in one message; function call args untouched",
        {
            "clientContent": {
                "turns": [
                    {
                        "role": "model",
                        "parts": [{"function_call": {"name": "f", "args": {"snake_key": 1}}}],
                    }
                ],
                "turn_complete": False,
            }
        },
        {
            "clientContent": {
                "turns": [
                    {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "f", "args": {"snake_key": 1}}}],
                    }
                ],
                "turnComplete": False,
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("frame", "upstream"), [rule[1:] for rule in SEND_RULES], ids=[rule[0] for rule in SEND_RULES]
)
def test_a_browser_text_frame_maps_to_one_exact_upstream_message(
    frame: Any, upstream: dict[str, Any]
) -> None:
    text = frame if isinstance(frame, str) else compact(frame)
    assert valid_upstream(browser_text_to_upstream(text)) == compact(upstream)


REFUSALS: list[tuple[str, str]] = [
    ('{"setup": {}}', "setup may only be sent once, as the first message"),
    ('{"unknown": 1}', 'Invalid JSON payload received. Unknown name "unknown": Cannot find field.'),
    ('{"a": 1, "b": 2}', "unknown message with keys 'a', 'b'"),
    ("[1, 2, 3]", "a JSON message must be an object"),
    ('"just a string"', "a JSON message must be an object"),
    ("42", "a JSON message must be an object"),  # valid JSON, so not a plain-text turn
    ('{"type": "dance"}', "invalid 'dance' message: unknown value 'dance'"),
    ('{"type": "text"}', "invalid 'text' message: required field missing @ $.text"),
    (
        '{"type": "text", "text": 5}',
        "invalid 'text' message: invalid value for type, expected str @ $.text",
    ),
    ('{"type": "image", "data": "!!!"}', "image data must be base64"),
    (
        '{"realtime_input": {"audio": {"data": 5}}}',
        "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES), 5",
    ),
]


@pytest.mark.parametrize(("frame", "message"), REFUSALS)
def test_a_refused_browser_frame_says_why(frame: str, message: str) -> None:
    with pytest.raises(BadMessage) as refused:
        browser_text_to_upstream(frame)
    assert refused.value.message == message


# Browser audio -> upstream ------------------------------------------------------------------


def test_audio_frames_become_realtime_input_audio_carrying_an_odd_byte_forward() -> None:
    aligner = AudioAligner()
    sent = [aligner.align(frame) for frame in (b"\x01\x02\x03", b"\x04\x05\x06", b"\x07\x08\x09")]
    assert sent == [b"\x01\x02", b"\x03\x04\x05\x06", b"\x07\x08"]  # 0x09 waits for more
    assert [valid_upstream(audio_to_upstream(pcm)) for pcm in sent] == [
        '{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"AQI="}}}',
        '{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"AwQFBg=="}}}',
        '{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"Bwg="}}}',
    ]
    assert aligner.align(b"\x0a") == b"\x09\x0a"


def test_a_one_byte_frame_sends_nothing_until_its_pair_comes() -> None:
    aligner = AudioAligner()
    assert aligner.align(b"\x01") == b""  # the reader sends no message for it
    assert aligner.align(b"\x02\x03") == b"\x01\x02"


# Upstream -> browser --------------------------------------------------------------------------

PCM = b"\x01\x02\x03\x04"


def audio_part(pcm: bytes = PCM) -> dict[str, Any]:
    return {
        "inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm).decode()}
    }


def model_turn(*parts: dict[str, Any], **content: Any) -> dict[str, Any]:
    return {"serverContent": {"modelTurn": {"parts": list(parts)}, **content}}


RECEIVE_RULES: list[tuple[str, str, UpstreamEvent]] = [
    (
        "audio parts become binary frames; an audio-only turn leaves no JSON",
        compact(model_turn(audio_part(), audio_part(b"\x05\x06"))),
        UpstreamEvent(frames=[PCM, b"\x05\x06"], generating=True),
    ),
    (
        "text parts stay JSON, after the audio",
        compact(model_turn(audio_part(), {"text": "hi"})),
        UpstreamEvent(
            frames=[PCM, '{"serverContent":{"modelTurn":{"parts":[{"text":"hi"}]}}}'],
            generating=True,
        ),
    ),
    (
        "the rest of serverContent stays JSON without the audio-only modelTurn",
        compact(model_turn(audio_part(), turnComplete=True)),
        UpstreamEvent(
            frames=[PCM, '{"serverContent":{"turnComplete":true}}'],
            generating=True,
            turn_complete=True,
        ),
    ),
    (
        "usageMetadata rides along with the audio",
        compact(model_turn(audio_part()) | {"usageMetadata": {"totalTokenCount": 9}}),
        UpstreamEvent(
            frames=[PCM, '{"usageMetadata":{"totalTokenCount":9}}'],
            generating=True,
            usage={"totalTokenCount": 9},
        ),
    ),
    (
        "a message without audio passes verbatim, spacing and all",
        '{ "serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}} }',
        UpstreamEvent(
            frames=['{ "serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}} }'],
            generating=True,
        ),
    ),
    (
        "usageMetadata with turnComplete passes verbatim and is noted",
        '{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":4}}',
        UpstreamEvent(
            frames=[
                '{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":4}}'
            ],
            usage={"promptTokenCount": 4},
            turn_complete=True,
        ),
    ),
    (
        "interrupted passes on and is noted",
        '{"serverContent":{"interrupted":true}}',
        UpstreamEvent(frames=['{"serverContent":{"interrupted":true}}'], interrupted=True),
    ),
    (
        "transcriptions pass on",
        '{"serverContent":{"outputTranscription":{"text":"hi"}}}',
        UpstreamEvent(frames=['{"serverContent":{"outputTranscription":{"text":"hi"}}}']),
    ),
    (
        "toolCallCancellation is held for the session to cancel its own calls",
        '{"toolCallCancellation":{"ids":["1"]}}',
        UpstreamEvent(tool_cancellation={"toolCallCancellation": {"ids": ["1"]}}),
    ),
    (
        "a toolCall is held for the session to add its stats (usage noted)",
        '{"toolCall":{"functionCalls":[{"id":"1","name":"f","args":{"a_b":1}}]},'
        '"usageMetadata":{"totalTokenCount":3}}',
        UpstreamEvent(
            tool_call={
                "toolCall": {"functionCalls": [{"id": "1", "name": "f", "args": {"a_b": 1}}]},
                "usageMetadata": {"totalTokenCount": 3},
            },
            usage={"totalTokenCount": 3},
        ),
    ),
    ("setupComplete is not passed on", '{"setupComplete":{}}', UpstreamEvent()),
    (
        "goAway is not passed on: its time left is reported",
        '{"goAway":{"timeLeft":"50s"}}',
        UpstreamEvent(go_away="50s"),
    ),
    ("a goAway without timeLeft means now", '{"goAway":{}}', UpstreamEvent(go_away="0s")),
    (
        "sessionResumptionUpdate is not passed on: its handle is reported",
        '{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}',
        UpstreamEvent(resumption_handle="h1", consumed_index=0),
    ),
    (
        "with its lastConsumedClientMessageIndex, an int64 as proto3 JSON writes it",
        '{"sessionResumptionUpdate":{"newHandle":"h2","resumable":true,'
        '"lastConsumedClientMessageIndex":"12"}}',
        UpstreamEvent(resumption_handle="h2", consumed_index=12),
    ),
    (
        "a sessionResumptionUpdate that is not resumable reports nothing",
        '{"sessionResumptionUpdate":{"resumable":false}}',
        UpstreamEvent(),
    ),
]


@pytest.mark.parametrize(
    ("raw", "event"), [rule[1:] for rule in RECEIVE_RULES], ids=[rule[0] for rule in RECEIVE_RULES]
)
def test_an_upstream_message_maps_to_exact_browser_frames(raw: str, event: UpstreamEvent) -> None:
    assert translate_upstream(raw, AudioAligner()) == event
    assert translate_upstream(raw.encode(), AudioAligner()) == event  # as bytes, the same


def test_a_tool_call_is_framed_with_the_session_stats() -> None:
    raw = '{"toolCall":{"functionCalls":[{"id":"1","name":"f"}]},"usageMetadata":{"x":1}}'
    call = translate_upstream(raw, AudioAligner()).tool_call
    assert call is not None
    stats = {"messageCount": 3, "audioChunksSent": 40, "elapsedSeconds": 1.5}
    assert with_session_stats(call, stats) == (
        '{"toolCall":{"functionCalls":[{"id":"1","name":"f"}]},"usageMetadata":{"x":1},'
        '"sessionStats":{"messageCount":3,"audioChunksSent":40,"elapsedSeconds":1.5}}'
    )


def test_upstream_audio_keeps_samples_whole_across_messages() -> None:
    aligner = AudioAligner()
    first = translate_upstream(compact(model_turn(audio_part(b"\x01\x02\x03"))), aligner)
    second = translate_upstream(compact(model_turn(audio_part(b"\x04"))), aligner)
    assert (first.frames, second.frames) == ([b"\x01\x02"], [b"\x03\x04"])


# The setup ------------------------------------------------------------------------------------

#: A browser's setup in the old servers' style: snake_case, tools as one object, a flag.
BROWSER_SETUP: dict[str, Any] = {
    "generation_config": {
        "response_modalities": ["AUDIO"],
        "temperature": 0.7,
        "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Aoede"}}},
        "enable_affective_dialog": True,
    },
    "system_instruction": {"parts": [{"text": "You are a helpful language tutor."}]},
    "tools": {
        "function_declarations": [
            {
                "name": "get_weather",
                "description": "Weather for a place",
                "parameters": {
                    "type": "object",
                    "properties": {"location_name": {"type": "string"}},
                },
            }
        ]
    },
    "proactivity": {"proactiveAudio": True},
    "realtime_input_config": {
        "automatic_activity_detection": {
            "disabled": False,
            "silence_duration_ms": 500,
            "prefix_padding_ms": 50,
            "end_of_speech_sensitivity": "END_SENSITIVITY_LOW",
            "start_of_speech_sensitivity": "START_SENSITIVITY_LOW",
        }
    },
    "input_audio_transcription": {},
    "output_audio_transcription": True,
    "model": "models/not-allowed",
}

#: :data:`BROWSER_SETUP` as :func:`browser_setup` returns it (the model not yet a backend path).
UPSTREAM_SETUP: dict[str, Any] = {
    "model": SERVER_MODEL,
    "generationConfig": {
        "responseModalities": ["AUDIO"],
        "temperature": 0.7,
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Aoede"}}},
        "enableAffectiveDialog": True,
    },
    "systemInstruction": {"parts": [{"text": "You are a helpful language tutor."}]},
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a place",
                    # Function parameters are user data: their keys are never rewritten.
                    "parameters": {
                        "type": "object",
                        "properties": {"location_name": {"type": "string"}},
                    },
                }
            ]
        }
    ],
    "proactivity": {"proactiveAudio": True},
    "realtimeInputConfig": {
        "automaticActivityDetection": {
            "disabled": False,
            "silenceDurationMs": 500,
            "prefixPaddingMs": 50,
            "endOfSpeechSensitivity": "END_SENSITIVITY_LOW",
            "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
        }
    },
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
    "contextWindowCompression": {"slidingWindow": {}},
    "sessionResumption": {},
}
#: What the server adds to every setup (with context-window compression on).
SERVER_FIELDS: dict[str, Any] = {
    "model": SERVER_MODEL,
    "contextWindowCompression": {"slidingWindow": {}},
    "sessionResumption": {},
}


def test_a_full_setup_is_normalised_with_the_servers_fields() -> None:
    assert browser_setup(BROWSER_SETUP, POLICY) == UPSTREAM_SETUP
    # What browser_setup returns, given again, comes back unchanged.
    assert browser_setup(UPSTREAM_SETUP, POLICY) == UPSTREAM_SETUP


@pytest.mark.parametrize("key", ["input_audio_transcription", "outputAudioTranscription"])
@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (True, {}),
        ({}, {}),
        ({"language_codes": ["en-US"]}, {"languageCodes": ["en-US"]}),
        (False, None),
        (None, None),
    ],
)
def test_transcription_flags(key: str, value: Any, sent: dict[str, Any] | None) -> None:
    camel = "inputAudioTranscription" if key.startswith("input") else "outputAudioTranscription"
    expected = SERVER_FIELDS if sent is None else SERVER_FIELDS | {camel: sent}
    assert browser_setup({key: value}, POLICY) == expected


@pytest.mark.parametrize(
    "tools",
    [{"google_search": {}}, [{"google_search": {}}]],
    ids=["one object", "a list"],
)
def test_tools_as_one_object_or_a_list(tools: Any) -> None:
    assert browser_setup({"tools": tools}, POLICY) == SERVER_FIELDS | {
        "tools": [{"googleSearch": {}}]
    }


@pytest.mark.parametrize("key", ["system_instruction", "systemInstruction"])
@pytest.mark.parametrize(
    "instruction",
    ["Be brief.", {"parts": [{"text": "Be brief."}]}],
    ids=["a plain string", "Content"],
)
def test_system_instruction_as_a_plain_string_or_content(key: str, instruction: Any) -> None:
    assert browser_setup({key: instruction}, POLICY) == SERVER_FIELDS | {
        "systemInstruction": {"parts": [{"text": "Be brief."}]}
    }


@pytest.mark.parametrize(
    ("requested", "allowed", "model"),
    [
        (None, {"gemini-x"}, SERVER_MODEL),
        ("models/not-allowed", set(), SERVER_MODEL),
        ("gemini-x", set(), SERVER_MODEL),
        ("gemini-x", {"gemini-x"}, "gemini-x"),
        ("models/gemini-x", {"gemini-x"}, "models/gemini-x"),
        ("gemini-y", {"gemini-x"}, SERVER_MODEL),
        ("", {""}, SERVER_MODEL),
        (5, {"5"}, SERVER_MODEL),
        (["gemini-x"], {"gemini-x"}, SERVER_MODEL),
    ],
)
def test_the_server_owns_the_model_unless_the_browser_asks_for_an_allowed_one(
    requested: Any, allowed: set[str], model: str
) -> None:
    setup = {} if requested is None else {"model": requested}
    policy = SetupPolicy(SERVER_MODEL, frozenset(allowed))
    assert browser_setup(setup, policy) == SERVER_FIELDS | {"model": model}


def test_the_server_owns_session_resumption_and_adds_compression_unless_given() -> None:
    setup = {"session_resumption": {"handle": "browsers-choice"}}
    assert browser_setup(setup, POLICY) == SERVER_FIELDS
    own = {"context_window_compression": {"trigger_tokens": 1000}}
    assert browser_setup(own, POLICY) == SERVER_FIELDS | {
        "contextWindowCompression": {"triggerTokens": 1000}
    }
    off = SetupPolicy(SERVER_MODEL, context_window_compression=False)
    assert browser_setup({}, off) == {"model": SERVER_MODEL, "sessionResumption": {}}
    assert browser_setup(own, off) == {
        "model": SERVER_MODEL,
        "contextWindowCompression": {"triggerTokens": 1000},
        "sessionResumption": {},
    }


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ([], "setup must be a JSON object"),
        ("x", "setup must be a JSON object"),
        (
            {"speechConfig": {}},
            "Invalid JSON payload received. Unknown name \"speechConfig\" at 'setup': "
            "Cannot find field.",
        ),
        (
            {"generation_config": {"voice_name": "Aoede"}},
            'Invalid JSON payload received. Unknown name "voice_name" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            {"generation_config": {"temperature": "hot"}},
            "Invalid value at 'setup.generation_config.temperature' (TYPE_FLOAT), \"hot\"",
        ),
    ],
)
def test_an_invalid_setup_is_refused_with_googles_reason(setup: Any, reason: str) -> None:
    with pytest.raises(InvalidSetup) as refused:
        browser_setup(setup, POLICY)
    assert refused.value.message == reason


def test_a_browser_without_a_setup_gets_the_default_one_each_time_afresh() -> None:
    expected = {
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
    first = default_setup(POLICY)
    assert first == expected | SERVER_FIELDS
    first["generationConfig"]["responseModalities"].append("TEXT")
    assert default_setup(POLICY) == expected | SERVER_FIELDS  # not shared between sessions
    off = SetupPolicy("m", context_window_compression=False)
    assert default_setup(off) == expected | {"model": "m", "sessionResumption": {}}


@pytest.mark.parametrize(
    ("handle", "transparent", "resumption"),
    [
        (None, False, "{}"),
        ("h1", False, '{"handle":"h1"}'),
        (None, True, '{"transparent":true}'),
        ("h1", True, '{"handle":"h1","transparent":true}'),
    ],
)
def test_the_upstream_setup_message_names_the_model_path_and_the_handle(
    handle: str | None, transparent: bool, resumption: str
) -> None:
    setup = {"model": SERVER_MODEL, "generationConfig": {"temperature": 1}, "sessionResumption": {}}
    message = upstream_setup_message(setup, "models/x", handle, transparent=transparent)
    assert message == (
        '{"setup":{"model":"models/x","generationConfig":{"temperature":1},'
        f'"sessionResumption":{resumption}}}}}'
    )
    assert setup["sessionResumption"] == {}  # the session's setup is left as it was
    valid_upstream(message)


def test_the_policy_comes_from_the_config() -> None:
    config = Config(model="m", allowed_models=frozenset({"x"}), context_window_compression=False)
    assert SetupPolicy.from_config(config) == SetupPolicy("m", frozenset({"x"}), False)
    vertex = Config(project_id="p", model="m")
    assert SetupPolicy.from_config(vertex).backend == "vertex"


THINKING = "gemini-3.8-live-extended-thinking"
TODAY = SetupPolicy("gemini-3.8-live", frozenset({THINKING, "gemini-3.5-transcribe-live"}))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            {"generation_config": {"thinking_config": {"thinking_budget": 0}}},
            "gemini-3.8-live: thinking_config is not supported.",
        ),
        (
            {"generation_config": {"response_modalities": ["TEXT"]}},
            "gemini-3.8-live: The text content type (CONTENT_TYPE_TEXT) is not supported for "
            "this model configuration.",
        ),
        (
            {"proactivity": {"proactive_audio": False}},
            "gemini-3.8-live: proactive_audio is always enabled for this model: omit it.",
        ),
        (
            {"generationConfig": {"enableAffectiveDialog": True}},
            'gemini-3.8-live: Invalid JSON payload received. Unknown name "enable_affective_dialog"'
            " at 'setup.generation_config': Cannot find field.",
        ),
        (
            {
                "model": THINKING,
                "generationConfig": {"thinkingConfig": {"thinkingLevel": "minimal"}},
            },
            f"{THINKING}: 'minimal' is not a supported thinking level for this model. "
            "Allowed values are: low, medium, high.",
        ),
        (
            {
                "model": THINKING,
                "tools": {"function_declarations": [{"name": "f", "behavior": "BLOCKING"}]},
            },
            f"{THINKING}: Function calling behavior BLOCKING is not supported for this model: "
            "declare functions NON_BLOCKING.",
        ),
        (
            {
                "model": "gemini-3.5-transcribe-live",
                "generation_config": {"response_modalities": ["AUDIO"]},
            },
            "gemini-3.5-transcribe-live: The audio content type (CONTENT_TYPE_AUDIO) is not "
            "supported for this model configuration.",
        ),
    ],
)
def test_a_setup_the_chosen_model_refuses_is_refused_in_googles_words(
    setup: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidSetup) as refused:
        browser_setup(setup, TODAY)
    assert refused.value.message == reason


@pytest.mark.parametrize(
    "setup",
    [
        {"generation_config": {"response_modalities": ["AUDIO"]}, "proactivity": {}},
        {"proactivity": {"proactive_audio": True}},
        {"tools": {"function_declarations": [{"name": "f", "behavior": "BLOCKING"}]}},
        {"model": THINKING, "generation_config": {"thinking_config": {"thinking_level": "HIGH"}}},
        {
            "model": "gemini-3.5-transcribe-live",
            "generationConfig": {"responseModalities": ["TEXT"]},
        },
    ],
)
def test_what_the_chosen_model_accepts_is_passed_on(setup: dict[str, Any]) -> None:
    assert browser_setup(setup, TODAY)["model"] == setup.get("model", "gemini-3.8-live")


def test_the_rules_are_the_backends_and_an_unknown_model_is_not_checked() -> None:
    affective = {"generationConfig": {"enableAffectiveDialog": True}}
    # Vertex's gemini-3.8-live keeps the affective-dialog switch.
    vertex = SetupPolicy("gemini-3.8-live", backend="vertex")
    assert browser_setup(affective, vertex)["generationConfig"] == affective["generationConfig"]
    thinking = {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}
    assert (
        browser_setup(thinking, SetupPolicy("gemini-9-live-next"))["model"] == "gemini-9-live-next"
    )


def test_the_default_setup_asks_a_text_only_model_for_text() -> None:
    transcribe = SetupPolicy("gemini-3.5-transcribe-live")
    assert default_setup(transcribe) == {
        "generationConfig": {"responseModalities": ["TEXT"]},
        "inputAudioTranscription": {},
        "model": "gemini-3.5-transcribe-live",
        "contextWindowCompression": {"slidingWindow": {}},
        "sessionResumption": {},
    }


# Server-side tools in the setup, and an older client's one tool response -------------------

SERVER_TOOL = {"name": "get_time", "description": "Now", "parameters": {"type": "object"}}


def test_the_servers_tools_come_after_the_browsers_and_replace_one_of_the_same_name() -> None:
    policy = SetupPolicy(SERVER_MODEL, tool_declarations=(SERVER_TOOL,))
    raw = {
        "tools": [
            {"function_declarations": [{"name": "get_weather"}, {"name": "get_time"}]},
            {"google_search": {}},
        ]
    }
    setup = browser_setup(raw, policy)
    assert setup["tools"] == [
        {"functionDeclarations": [{"name": "get_weather"}]},
        {"googleSearch": {}},
        {"functionDeclarations": [SERVER_TOOL]},
    ]
    assert default_setup(policy)["tools"] == [{"functionDeclarations": [SERVER_TOOL]}]
    alone = browser_setup({"tools": {"function_declarations": [{"name": "get_time"}]}}, policy)
    assert alone["tools"] == [{"functionDeclarations": [SERVER_TOOL]}]


def test_without_server_tools_the_setup_has_only_the_browsers() -> None:
    assert "tools" not in browser_setup({}, SetupPolicy(SERVER_MODEL))


@pytest.mark.parametrize("key", ["tool_response", "toolResponse"])
def test_an_older_clients_single_tool_response_is_wrapped(key: str) -> None:
    frame = orjson.dumps({key: {"id": "c1", "name": "f", "response": {"ok": 1}}}).decode()
    assert orjson.loads(browser_text_to_upstream(frame)) == {
        "toolResponse": {"functionResponses": [{"id": "c1", "name": "f", "response": {"ok": 1}}]}
    }


def test_a_single_tool_response_with_an_unknown_field_is_still_refused() -> None:
    frame = orjson.dumps({"tool_response": {"id": "c1", "nonsense": 1}}).decode()
    with pytest.raises(BadMessage, match="nonsense"):
        browser_text_to_upstream(frame)
