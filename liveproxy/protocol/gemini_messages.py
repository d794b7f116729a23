"""Gemini Live's client messages, as the validator in :mod:`liveproxy.protocol.schema` reads them.

The declarations follow the ``BidiGenerateContent*`` protos of the Live API (field names in
camelCase, as the validator stores them); :func:`parse_client_message` checks one decoded client
message against them.
"""

from __future__ import annotations

from typing import Any, Final

from liveproxy.protocol.schema import (
    Enum,
    Message,
    Scalar,
    declare,
    parse_oneof,
    repeated,
)

S = Scalar
EMPTY = declare("Empty", dict)

_SENSITIVITY_START = Enum(
    "StartSensitivity",
    frozenset({"START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"}),
)
_SENSITIVITY_END = Enum(
    "EndSensitivity",
    frozenset({"END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"}),
)
MODALITY = Enum("Modality", frozenset({"MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"}))

BLOB = declare("Blob", lambda: {"mimeType": S.STRING, "data": S.BYTES, "displayName": S.STRING})
FILE_DATA = declare(
    "FileData", lambda: {"mimeType": S.STRING, "fileUri": S.STRING, "displayName": S.STRING}
)
FUNCTION_RESPONSE = declare(
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
        "parts": repeated(
            declare(
                "FunctionResponsePart",
                lambda: {"inlineData": BLOB, "fileData": FILE_DATA},
            )
        ),
    },
)
PART = declare(
    "Part",
    lambda: {
        "text": S.STRING,
        "inlineData": BLOB,
        "fileData": FILE_DATA,
        "functionCall": declare(
            "FunctionCall",
            lambda: {
                "id": S.STRING,
                "name": S.STRING,
                "args": S.STRUCT,
                "willContinue": S.BOOL,
                "partialArgs": repeated(S.VALUE),
            },
        ),
        "functionResponse": FUNCTION_RESPONSE,
        "executableCode": declare(
            "ExecutableCode",
            lambda: {"language": Enum("Language"), "code": S.STRING, "id": S.STRING},
        ),
        "codeExecutionResult": declare(
            "CodeExecutionResult",
            lambda: {"outcome": Enum("Outcome"), "output": S.STRING, "id": S.STRING},
        ),
        "thought": S.BOOL,
        "thoughtSignature": S.BYTES,
        "videoMetadata": declare(
            "VideoMetadata",
            lambda: {"startOffset": S.DURATION, "endOffset": S.DURATION, "fps": S.FLOAT},
        ),
        "mediaResolution": declare(
            "PartMediaResolution", lambda: {"level": Enum("Level"), "numTokens": S.INT32}
        ),
        "partMetadata": S.STRUCT,
    },
)
CONTENT = declare("Content", lambda: {"role": S.STRING, "parts": repeated(PART)})

VOICE_CONFIG: Message = declare(
    "VoiceConfig",
    lambda: {
        "prebuiltVoiceConfig": declare("PrebuiltVoiceConfig", lambda: {"voiceName": S.STRING}),
        "replicatedVoiceConfig": declare(
            "ReplicatedVoiceConfig",
            lambda: {
                "mimeType": S.STRING,
                "voiceSampleAudio": S.BYTES,
                "consentAudio": S.BYTES,
                "voiceConsentSignature": declare(
                    "VoiceConsentSignature", lambda: {"signature": S.STRING}
                ),
            },
        ),
    },
)
SPEECH_CONFIG = declare(
    "SpeechConfig",
    lambda: {
        "voiceConfig": VOICE_CONFIG,
        "languageCode": S.STRING,
        "multiSpeakerVoiceConfig": declare(
            "MultiSpeakerVoiceConfig",
            lambda: {
                "speakerVoiceConfigs": repeated(
                    declare(
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

AUDIO_TRANSCRIPTION_CONFIG = declare(
    "AudioTranscriptionConfig",
    lambda: {
        "languageCodes": repeated(S.STRING),
        "customVocabulary": repeated(S.STRING),
        "adaptationPhrases": repeated(S.STRING),
        "wordTimestamp": S.BOOL,
        "diarization": S.BOOL,
        "mode": Enum("Mode"),
        "languageAuto": S.STRUCT,
        "languageHints": declare("LanguageHints", lambda: {"languageCodes": repeated(S.STRING)}),
    },
)

GENERATION_CONFIG = declare(
    "GenerationConfig",
    lambda: {
        "responseModalities": repeated(MODALITY),
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
        "thinkingConfig": declare(
            "ThinkingConfig",
            lambda: {
                "includeThoughts": S.BOOL,
                "thinkingBudget": S.INT32,
                "thinkingLevel": Enum("ThinkingLevel"),
            },
        ),
        "enableAffectiveDialog": S.BOOL,
        "translationConfig": declare(
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
        "stopSequences": repeated(S.STRING),
        "routingConfig": S.STRUCT,
        "audioTimestamp": S.BOOL,
    },
)

FUNCTION_DECLARATION = declare(
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
TOOL = declare(
    "Tool",
    lambda: {
        "functionDeclarations": repeated(FUNCTION_DECLARATION),
        "googleSearch": S.STRUCT,
        "googleSearchRetrieval": S.STRUCT,
        "codeExecution": S.STRUCT,
        "urlContext": S.STRUCT,
        "googleMaps": S.STRUCT,
        "computerUse": S.STRUCT,
        "fileSearch": S.STRUCT,
        "enterpriseWebSearch": S.STRUCT,
        "retrieval": S.STRUCT,
        "mcpServers": repeated(S.STRUCT),
    },
)

REALTIME_INPUT_CONFIG = declare(
    "RealtimeInputConfig",
    lambda: {
        "automaticActivityDetection": declare(
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

SETUP = declare(
    "BidiGenerateContentSetup",
    lambda: {
        "model": S.STRING,
        "generationConfig": GENERATION_CONFIG,
        "systemInstruction": CONTENT,
        "tools": repeated(TOOL),
        "realtimeInputConfig": REALTIME_INPUT_CONFIG,
        "sessionResumption": declare(
            "SessionResumptionConfig", lambda: {"handle": S.STRING, "transparent": S.BOOL}
        ),
        "contextWindowCompression": declare(
            "ContextWindowCompressionConfig",
            lambda: {
                "triggerTokens": S.INT64,
                "slidingWindow": declare("SlidingWindow", lambda: {"targetTokens": S.INT64}),
            },
        ),
        "inputAudioTranscription": AUDIO_TRANSCRIPTION_CONFIG,
        "outputAudioTranscription": AUDIO_TRANSCRIPTION_CONFIG,
        "proactivity": declare(
            "ProactivityConfig", lambda: {"proactiveAudio": S.BOOL, "proactiveVideo": S.BOOL}
        ),
        "historyConfig": declare(
            "HistoryConfig", lambda: {"initialHistoryInClientContent": S.BOOL}
        ),
        "explicitVadSignal": S.BOOL,
        "avatarConfig": declare(
            "AvatarConfig",
            lambda: {
                "avatarName": S.STRING,
                "customizedAvatar": declare(
                    "CustomizedAvatar", lambda: {"imageMimeType": S.STRING, "imageData": S.BYTES}
                ),
                "audioBitrateBps": S.INT32,
                "videoBitrateBps": S.INT32,
            },
        ),
        "safetySettings": repeated(
            declare(
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

CLIENT_CONTENT = declare(
    "BidiGenerateContentClientContent",
    lambda: {"turns": repeated(CONTENT), "turnComplete": S.BOOL},
)
REALTIME_INPUT = declare(
    "BidiGenerateContentRealtimeInput",
    lambda: {
        "mediaChunks": repeated(BLOB),
        "audio": BLOB,
        "video": BLOB,
        "text": S.STRING,
        "audioStreamEnd": S.BOOL,
        "activityStart": EMPTY,
        "activityEnd": EMPTY,
    },
)
TOOL_RESPONSE = declare(
    "BidiGenerateContentToolResponse",
    lambda: {"functionResponses": repeated(FUNCTION_RESPONSE)},
)

#: The four client message kinds (the ``oneof message_type`` of BidiGenerateContentClientMessage).
CLIENT_MESSAGE = declare(
    "BidiGenerateContentClientMessage",
    lambda: {
        "setup": SETUP,
        "clientContent": CLIENT_CONTENT,
        "realtimeInput": REALTIME_INPUT,
        "toolResponse": TOOL_RESPONSE,
    },
)


def parse_client_message(message: Any) -> tuple[str, dict[str, Any]]:
    """Check one decoded client message; return its kind (camelCase) and normalised body.

    Raises:
        SchemaError: not an object, not exactly one known top-level key, an invalid body, or one
            nested deeper than :data:`~liveproxy.protocol.schema.MAX_DEPTH` levels.
    """
    return parse_oneof(CLIENT_MESSAGE, "message_type", message)
