"""The schema of Gemini Live client messages, and a validator that normalises them.

Google parses client messages as protobuf JSON: every field may be spelled in snake_case or
lowerCamelCase, unknown names and ill-typed values are refused with a close 1007 whose reason
names the field in snake_case (``Unknown name "x" at 'setup.generation_config'``). The free-form
``Struct`` payloads (function parameters, call args, function responses) are user data: their keys
are neither validated nor renamed.

:func:`parse_client_message` applies those rules to one decoded JSON message and returns its kind
and a camelCase copy of its body, or raises :class:`SchemaError` with Google's reason text.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs
import orjson

from liveproxy.protocol.b64 import decode_b64
from liveproxy.protocol.casing import to_camel, to_snake
from liveproxy.protocol.closes import INVALID_ARGUMENT


class Scalar(enum.Enum):
    """Leaf value kinds, named after protobuf's types as Google names them in error reasons."""

    STRING = "TYPE_STRING"
    INT32 = "TYPE_INT32"
    INT64 = "TYPE_INT64"
    FLOAT = "TYPE_FLOAT"
    BOOL = "TYPE_BOOL"
    BYTES = "TYPE_BYTES"
    DURATION = "type.googleapis.com/google.protobuf.Duration"
    STRUCT = "type.googleapis.com/google.protobuf.Struct"
    VALUE = "type.googleapis.com/google.protobuf.Value"


@attrs.frozen
class Enum:
    """An enum field; ``values`` empty means any name is accepted."""

    name: str
    values: frozenset[str] = frozenset()


@attrs.frozen
class Message:
    """A message type; ``fields`` is a thunk so message types can refer to each other."""

    name: str
    _fields: Callable[[], Mapping[str, Field]] = attrs.field(eq=False, repr=False)

    @property
    def fields(self) -> Mapping[str, Field]:
        return _resolved(self)


FieldType: TypeAlias = Scalar | Enum | Message


@attrs.frozen
class Field:
    type: FieldType
    repeated: bool = False


_RESOLVED: dict[str, Mapping[str, Field]] = {}


def _resolved(message: Message) -> Mapping[str, Field]:
    fields = _RESOLVED.get(message.name)
    if fields is None:
        fields = _RESOLVED[message.name] = message._fields()
    return fields


def _one(type_: FieldType) -> Field:
    return Field(type_)


def _many(type_: FieldType) -> Field:
    return Field(type_, repeated=True)


def _message(name: str, build: Callable[[], Mapping[str, FieldType | Field]]) -> Message:
    def fields() -> Mapping[str, Field]:
        return {k: v if isinstance(v, Field) else Field(v) for k, v in build().items()}

    return Message(name, fields)


S = Scalar
EMPTY = _message("Empty", dict)

_SENSITIVITY_START = Enum(
    "StartSensitivity",
    frozenset({"START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"}),
)
_SENSITIVITY_END = Enum(
    "EndSensitivity",
    frozenset({"END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"}),
)
MODALITY = Enum("Modality", frozenset({"MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"}))

BLOB = _message("Blob", lambda: {"mimeType": S.STRING, "data": S.BYTES, "displayName": S.STRING})
FILE_DATA = _message(
    "FileData", lambda: {"mimeType": S.STRING, "fileUri": S.STRING, "displayName": S.STRING}
)
FUNCTION_RESPONSE = _message(
    "FunctionResponse",
    lambda: {
        "id": S.STRING,
        "name": S.STRING,
        "response": S.STRUCT,
        "willContinue": S.BOOL,
        "scheduling": Enum(
            "Scheduling",
            frozenset({"SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"}),
        ),
        "parts": _many(
            _message(
                "FunctionResponsePart",
                lambda: {"inlineData": BLOB, "fileData": FILE_DATA},
            )
        ),
    },
)
PART = _message(
    "Part",
    lambda: {
        "text": S.STRING,
        "inlineData": BLOB,
        "fileData": FILE_DATA,
        "functionCall": _message(
            "FunctionCall",
            lambda: {
                "id": S.STRING,
                "name": S.STRING,
                "args": S.STRUCT,
                "willContinue": S.BOOL,
                "partialArgs": _many(S.VALUE),
            },
        ),
        "functionResponse": FUNCTION_RESPONSE,
        "executableCode": _message(
            "ExecutableCode",
            lambda: {"language": Enum("Language"), "code": S.STRING, "id": S.STRING},
        ),
        "codeExecutionResult": _message(
            "CodeExecutionResult",
            lambda: {"outcome": Enum("Outcome"), "output": S.STRING, "id": S.STRING},
        ),
        "thought": S.BOOL,
        "thoughtSignature": S.BYTES,
        "videoMetadata": _message(
            "VideoMetadata",
            lambda: {"startOffset": S.DURATION, "endOffset": S.DURATION, "fps": S.FLOAT},
        ),
        "mediaResolution": _message(
            "PartMediaResolution", lambda: {"level": Enum("Level"), "numTokens": S.INT32}
        ),
        "partMetadata": S.STRUCT,
    },
)
CONTENT = _message("Content", lambda: {"role": S.STRING, "parts": _many(PART)})

VOICE_CONFIG: Message = _message(
    "VoiceConfig",
    lambda: {
        "prebuiltVoiceConfig": _message("PrebuiltVoiceConfig", lambda: {"voiceName": S.STRING}),
        "replicatedVoiceConfig": _message(
            "ReplicatedVoiceConfig",
            lambda: {
                "mimeType": S.STRING,
                "voiceSampleAudio": S.BYTES,
                "consentAudio": S.BYTES,
                "voiceConsentSignature": _message(
                    "VoiceConsentSignature", lambda: {"signature": S.STRING}
                ),
            },
        ),
    },
)
SPEECH_CONFIG = _message(
    "SpeechConfig",
    lambda: {
        "voiceConfig": VOICE_CONFIG,
        "languageCode": S.STRING,
        "multiSpeakerVoiceConfig": _message(
            "MultiSpeakerVoiceConfig",
            lambda: {
                "speakerVoiceConfigs": _many(
                    _message(
                        "SpeakerVoiceConfig",
                        lambda: {"speaker": S.STRING, "voiceConfig": VOICE_CONFIG},
                    )
                )
            },
        ),
    },
)

#: Fields of ``GenerationConfig`` that exist in the proto but that the Live API does not support.
LIVE_UNSUPPORTED_GENERATION_FIELDS: Final = frozenset(
    {
        "responseLogprobs",
        "responseMimeType",
        "logprobs",
        "responseSchema",
        "responseJsonSchema",
        "stopSequences",
        "routingConfig",
        "audioTimestamp",
    }
)

AUDIO_TRANSCRIPTION_CONFIG = _message(
    "AudioTranscriptionConfig",
    lambda: {
        "languageCodes": _many(S.STRING),
        "customVocabulary": _many(S.STRING),
        "adaptationPhrases": _many(S.STRING),
        "wordTimestamp": S.BOOL,
        "diarization": S.BOOL,
        "mode": Enum("Mode"),
        "languageAuto": S.STRUCT,
        "languageHints": _message("LanguageHints", lambda: {"languageCodes": _many(S.STRING)}),
    },
)

GENERATION_CONFIG = _message(
    "GenerationConfig",
    lambda: {
        "responseModalities": _many(MODALITY),
        "temperature": S.FLOAT,
        "topP": S.FLOAT,
        "topK": S.FLOAT,
        "maxOutputTokens": S.INT32,
        "seed": S.INT32,
        "candidateCount": S.INT32,
        "presencePenalty": S.FLOAT,
        "frequencyPenalty": S.FLOAT,
        "mediaResolution": Enum(
            "MediaResolution",
            frozenset(
                {
                    "MEDIA_RESOLUTION_UNSPECIFIED",
                    "MEDIA_RESOLUTION_LOW",
                    "MEDIA_RESOLUTION_MEDIUM",
                    "MEDIA_RESOLUTION_HIGH",
                }
            ),
        ),
        "speechConfig": SPEECH_CONFIG,
        "thinkingConfig": _message(
            "ThinkingConfig",
            lambda: {
                "includeThoughts": S.BOOL,
                "thinkingBudget": S.INT32,
                "thinkingLevel": Enum("ThinkingLevel"),
            },
        ),
        "enableAffectiveDialog": S.BOOL,
        "translationConfig": _message(
            "TranslationConfig",
            lambda: {"targetLanguageCode": S.STRING, "echoTargetLanguage": S.BOOL},
        ),
        "audioTranscriptionConfig": AUDIO_TRANSCRIPTION_CONFIG,
        # In the proto, refused by the Live API itself (not by the JSON parser):
        "responseLogprobs": S.BOOL,
        "responseMimeType": S.STRING,
        "logprobs": S.INT32,
        "responseSchema": S.STRUCT,
        "responseJsonSchema": S.VALUE,
        "stopSequences": _many(S.STRING),
        "routingConfig": S.STRUCT,
        "audioTimestamp": S.BOOL,
    },
)

FUNCTION_DECLARATION = _message(
    "FunctionDeclaration",
    lambda: {
        "name": S.STRING,
        "description": S.STRING,
        "parameters": S.STRUCT,
        "parametersJsonSchema": S.VALUE,
        "response": S.STRUCT,
        "responseJsonSchema": S.VALUE,
        "behavior": Enum("Behavior", frozenset({"UNSPECIFIED", "BLOCKING", "NON_BLOCKING"})),
    },
)
TOOL = _message(
    "Tool",
    lambda: {
        "functionDeclarations": _many(FUNCTION_DECLARATION),
        "googleSearch": S.STRUCT,
        "googleSearchRetrieval": S.STRUCT,
        "codeExecution": S.STRUCT,
        "urlContext": S.STRUCT,
        "googleMaps": S.STRUCT,
        "computerUse": S.STRUCT,
        "fileSearch": S.STRUCT,
        "enterpriseWebSearch": S.STRUCT,
        "retrieval": S.STRUCT,
        "mcpServers": _many(S.STRUCT),
    },
)

REALTIME_INPUT_CONFIG = _message(
    "RealtimeInputConfig",
    lambda: {
        "automaticActivityDetection": _message(
            "AutomaticActivityDetection",
            lambda: {
                "disabled": S.BOOL,
                "startOfSpeechSensitivity": _SENSITIVITY_START,
                "endOfSpeechSensitivity": _SENSITIVITY_END,
                "prefixPaddingMs": S.INT32,
                "silenceDurationMs": S.INT32,
            },
        ),
        "activityHandling": Enum(
            "ActivityHandling",
            frozenset(
                {
                    "ACTIVITY_HANDLING_UNSPECIFIED",
                    "START_OF_ACTIVITY_INTERRUPTS",
                    "NO_INTERRUPTION",
                }
            ),
        ),
        "turnCoverage": Enum(
            "TurnCoverage",
            frozenset(
                {
                    "TURN_COVERAGE_UNSPECIFIED",
                    "TURN_INCLUDES_ONLY_ACTIVITY",
                    "TURN_INCLUDES_ALL_INPUT",
                    "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO",
                }
            ),
        ),
        "interimTranscriptTimestampEnabled": S.BOOL,
    },
)

SETUP = _message(
    "BidiGenerateContentSetup",
    lambda: {
        "model": S.STRING,
        "generationConfig": GENERATION_CONFIG,
        "systemInstruction": CONTENT,
        "tools": _many(TOOL),
        "realtimeInputConfig": REALTIME_INPUT_CONFIG,
        "sessionResumption": _message(
            "SessionResumptionConfig", lambda: {"handle": S.STRING, "transparent": S.BOOL}
        ),
        "contextWindowCompression": _message(
            "ContextWindowCompressionConfig",
            lambda: {
                "triggerTokens": S.INT64,
                "slidingWindow": _message("SlidingWindow", lambda: {"targetTokens": S.INT64}),
            },
        ),
        "inputAudioTranscription": AUDIO_TRANSCRIPTION_CONFIG,
        "outputAudioTranscription": AUDIO_TRANSCRIPTION_CONFIG,
        "proactivity": _message(
            "ProactivityConfig", lambda: {"proactiveAudio": S.BOOL, "proactiveVideo": S.BOOL}
        ),
        "historyConfig": _message(
            "HistoryConfig", lambda: {"initialHistoryInClientContent": S.BOOL}
        ),
        "explicitVadSignal": S.BOOL,
        "avatarConfig": _message(
            "AvatarConfig",
            lambda: {
                "avatarName": S.STRING,
                "customizedAvatar": _message(
                    "CustomizedAvatar", lambda: {"imageMimeType": S.STRING, "imageData": S.BYTES}
                ),
                "audioBitrateBps": S.INT32,
                "videoBitrateBps": S.INT32,
            },
        ),
        "safetySettings": _many(
            _message(
                "SafetySetting",
                lambda: {
                    "category": Enum("HarmCategory"),
                    "method": Enum("HarmBlockMethod"),
                    "threshold": Enum("HarmBlockThreshold"),
                },
            )
        ),
        "labels": S.STRUCT,
    },
)

CLIENT_CONTENT = _message(
    "BidiGenerateContentClientContent",
    lambda: {"turns": _many(CONTENT), "turnComplete": S.BOOL},
)
REALTIME_INPUT = _message(
    "BidiGenerateContentRealtimeInput",
    lambda: {
        "mediaChunks": _many(BLOB),
        "audio": BLOB,
        "video": BLOB,
        "text": S.STRING,
        "audioStreamEnd": S.BOOL,
        "activityStart": EMPTY,
        "activityEnd": EMPTY,
    },
)
TOOL_RESPONSE = _message(
    "BidiGenerateContentToolResponse",
    lambda: {"functionResponses": _many(FUNCTION_RESPONSE)},
)

#: The four client message kinds (the ``oneof message_type`` of BidiGenerateContentClientMessage).
CLIENT_MESSAGE = _message(
    "BidiGenerateContentClientMessage",
    lambda: {
        "setup": SETUP,
        "clientContent": CLIENT_CONTENT,
        "realtimeInput": REALTIME_INPUT,
        "toolResponse": TOOL_RESPONSE,
    },
)


@attrs.define(eq=False)
class SchemaError(Exception):
    """A client message Google would refuse; ``reason`` is Google's close reason (code 1007)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def _unknown(key: str, path: str) -> SchemaError:
    where = f" at '{path}'" if path else ""
    return SchemaError(
        f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
    )


def _invalid(path: str, type_name: str, value: Any) -> SchemaError:
    shown = orjson.dumps(value).decode() if not isinstance(value, str) else f'"{value}"'
    if len(shown) > 40:
        shown = shown[:40] + "..."
    return SchemaError(f"Invalid value at '{path}' ({type_name}), {shown}")


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return False
        return True
    return False


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _is_duration(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("s") and _is_number(value[:-1])


def _check_scalar(kind: Scalar, value: Any, path: str) -> Any:
    ok: bool
    if kind is Scalar.STRING:
        ok = isinstance(value, str)
    elif kind in (Scalar.INT32, Scalar.INT64):
        ok = _is_integral(value)
    elif kind is Scalar.FLOAT:
        ok = _is_number(value)
    elif kind is Scalar.BOOL:
        ok = isinstance(value, bool)
    elif kind is Scalar.BYTES:
        ok = isinstance(value, str)
        if ok:
            try:
                decode_b64(value)
            except ValueError:
                ok = False
    elif kind is Scalar.DURATION:
        ok = _is_duration(value)
    elif kind is Scalar.STRUCT:
        ok = isinstance(value, dict)
    else:  # VALUE: any JSON
        ok = True
    if not ok:
        raise _invalid(path, kind.value, value)
    return value


def _check_enum(enum_: Enum, value: Any, path: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (not enum_.values or value in enum_.values):
        return value
    raise _invalid(path, enum_.name, value)


def _check_single(type_: FieldType, value: Any, path: str) -> Any:
    if isinstance(type_, Message):
        return normalise(type_, value, path)
    if isinstance(type_, Enum):
        return _check_enum(type_, value, path)
    return _check_scalar(type_, value, path)


def normalise(message: Message, value: Any, path: str) -> dict[str, Any]:
    """Validate ``value`` as ``message`` and return a copy with camelCase keys.

    Raises:
        SchemaError: an unknown field, a value of the wrong type, or a field given twice.
    """
    if not isinstance(value, dict):
        raise _invalid(path, message.name, value)
    fields = message.fields
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = to_camel(key)
        field = fields.get(name)
        if field is None:
            raise _unknown(key, path)
        if name in out:
            raise SchemaError(
                f"Invalid JSON payload received. Field '{path}.{to_snake(name)}' is set twice."
            )
        child = f"{path}.{to_snake(name)}" if path else to_snake(name)
        if field.repeated:
            if not isinstance(item, list):
                raise _invalid(child, "repeated", item)
            out[name] = [_check_single(field.type, x, f"{child}[{i}]") for i, x in enumerate(item)]
        else:
            out[name] = _check_single(field.type, item, child)
    return out


def parse_client_message(message: Any) -> tuple[str, dict[str, Any]]:
    """Check one decoded client message; return its kind (camelCase) and normalised body.

    Raises:
        SchemaError: not an object, not exactly one known top-level key, or an invalid body.
    """
    if not isinstance(message, dict):
        raise SchemaError("Invalid JSON payload received. Expected an object.")
    if not message:
        raise SchemaError(INVALID_ARGUMENT)
    kinds = CLIENT_MESSAGE.fields
    kind = ""
    for key in message:
        name = to_camel(key)
        if name not in kinds:
            raise _unknown(key, "")
        if kind:
            raise SchemaError(
                "Invalid JSON payload received. Oneof field 'message_type' is already set. "
                f"Cannot set '{name}'"
            )
        kind = name
    (body,) = message.values()
    body_type = kinds[kind].type
    assert isinstance(body_type, Message)
    return kind, normalise(body_type, body, to_snake(kind))
