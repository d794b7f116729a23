"""Reading a validated ``setup`` body into the options that steer the conversation.

The body has already passed :func:`liveproxy.protocol.gemini_messages.parse_client_message`
(known fields, right types, camelCase keys); this module applies the Live API's own rules on top,
then the model's (:func:`liveproxy.protocol.live_models.check_setup`), and reads what the model
does differently: which function calls do not wait for their response, whether it reports
``interactionStatus`` (and thinks on request), whether it only transcribes.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from liveproxy.emulator.catalog import ModelCatalog, not_found_reason
from liveproxy.emulator.endings import Close
from liveproxy.emulator.record import Api
from liveproxy.emulator.vad import VadSettings
from liveproxy.protocol.closes import INVALID_ARGUMENT, INVALID_PAYLOAD, POLICY
from liveproxy.protocol.gemini_messages import LIVE_UNSUPPORTED_GENERATION_FIELDS
from liveproxy.protocol.live_models import ModelRules, check_setup, rules_for

Modality = Literal["AUDIO", "TEXT"]

_MODALITY_NUMBERS = {0: "MODALITY_UNSPECIFIED", 1: "TEXT", 2: "IMAGE", 3: "AUDIO"}
_START_NUMBERS = {1: "START_SENSITIVITY_HIGH", 2: "START_SENSITIVITY_LOW"}
_END_NUMBERS = {1: "END_SENSITIVITY_HIGH", 2: "END_SENSITIVITY_LOW"}
_HANDLING_NUMBERS = {2: "NO_INTERRUPTION"}
_BEHAVIOR_NUMBERS = {0: "UNSPECIFIED", 1: "BLOCKING", 2: "NON_BLOCKING"}

#: RMS thresholds (PCM16 units) for the start-of-speech sensitivities.
THRESHOLD_HIGH_SENSITIVITY = 300
THRESHOLD_LOW_SENSITIVITY = 1000
#: Silence that ends speech when ``silenceDurationMs`` is absent.
SILENCE_MS = 500
SILENCE_MS_LOW_SENSITIVITY = 1000
PADDING_MS = 100
START_MS = 40


@attrs.frozen
class SessionOptions:
    """What the setup asked for, as the emulator uses it."""

    model: str
    modality: Modality = "AUDIO"
    input_transcription: bool = False
    output_transcription: bool = False
    #: None when automatic activity detection is disabled (the client sends activityStart/End).
    vad: VadSettings | None = attrs.field(factory=VadSettings)
    #: False with ``activityHandling: NO_INTERRUPTION``.
    barge_in: bool = True
    functions: frozenset[str] = frozenset()
    #: The declared functions whose calls do not wait for their response (``NON_BLOCKING``, by
    #: declaration or by the model's default); only on models that call NON_BLOCKING by
    #: default (the 3.8 family): on the others every call blocks.
    non_blocking: frozenset[str] = frozenset()
    #: The model reports ``interactionStatus``, and goes on after ``turnComplete`` when asked to
    #: think or when it calls a function (the extended-thinking model).
    interaction_status: bool = False
    #: ``thinkingConfig.includeThoughts``: thought text parts precede a thought-out answer.
    include_thoughts: bool = False
    #: The model only transcribes: speech is answered with its transcript, text not at all.
    transcribe_only: bool = False
    resumption: bool = False
    handle: str | None = None
    #: ``sessionResumption.transparent`` on Vertex: updates carry
    #: ``lastConsumedClientMessageIndex``. The Developer API accepts the field and ignores it.
    transparent: bool = False
    system_text: str = ""


def _name(value: Any, numbers: dict[int, str]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return numbers.get(value, "")
    return str(value)


def _int(value: Any, default: int) -> int:
    return default if value is None else int(float(value))


def _modality(generation: dict[str, Any], default: Modality) -> Modality:
    names = [_name(m, _MODALITY_NUMBERS) for m in generation.get("responseModalities", [])]
    if len(names) > 1:
        raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
    name = names[0] if names else "MODALITY_UNSPECIFIED"
    if name == "MODALITY_UNSPECIFIED":
        return default
    if name in ("AUDIO", "TEXT"):
        return "AUDIO" if name == "AUDIO" else "TEXT"
    raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)


def _vad(realtime: dict[str, Any]) -> VadSettings | None:
    detection = realtime.get("automaticActivityDetection", {})
    if detection.get("disabled"):
        return None
    start = _name(detection.get("startOfSpeechSensitivity", ""), _START_NUMBERS)
    end = _name(detection.get("endOfSpeechSensitivity", ""), _END_NUMBERS)
    default_silence = SILENCE_MS_LOW_SENSITIVITY if end == "END_SENSITIVITY_LOW" else SILENCE_MS
    return VadSettings(
        threshold=(
            THRESHOLD_LOW_SENSITIVITY
            if start == "START_SENSITIVITY_LOW"
            else THRESHOLD_HIGH_SENSITIVITY
        ),
        start_ms=START_MS,
        silence_ms=_int(detection.get("silenceDurationMs"), default_silence),
        padding_ms=_int(detection.get("prefixPaddingMs"), PADDING_MS),
    )


def _declarations(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        declaration
        for tool in tools
        for declaration in tool.get("functionDeclarations", [])
        if declaration.get("name")
    ]


def _non_blocking(declarations: list[dict[str, Any]], rules: ModelRules | None) -> frozenset[str]:
    """The functions whose calls do not wait: on a model that calls NON_BLOCKING by default,
    those declared so or without a behaviour; on any other model, none."""
    if rules is None or rules.default_behavior != "NON_BLOCKING":
        return frozenset()
    return frozenset(
        declaration["name"]
        for declaration in declarations
        if _name(declaration.get("behavior", "UNSPECIFIED"), _BEHAVIOR_NUMBERS) != "BLOCKING"
    )


def _text_of(content: dict[str, Any] | None) -> str:
    if not content:
        return ""
    return "".join(part.get("text", "") for part in content.get("parts", []))


def read_setup(
    setup: dict[str, Any], *, api: Api, api_version: str, models: ModelCatalog
) -> SessionOptions:
    """The options of a schema-valid ``setup`` body on ``api`` (``api_version``).

    Raises:
        Close: 1007 "Request contains an invalid argument." for a missing model, a generation
            field the Live API does not support or more than one (or an unsupported) response
            modality; 1008 with Google's "not found" reason for a model ``models`` does not
            serve on ``api``, or one Google has shut down; and what the model's own rules
            (:func:`~liveproxy.protocol.live_models.check_setup`) refuse, with their code and
            reason (1007, e.g. a ``thinkingConfig`` for ``gemini-3.8-live``). A model served
            but not in :data:`~liveproxy.protocol.live_models.LIVE_MODELS` has no rules.
    """
    model = setup.get("model", "")
    if not model:
        raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
    if not models.serves(model, api):
        raise Close(POLICY, not_found_reason(model, api, api_version))
    generation = setup.get("generationConfig", {})
    if LIVE_UNSUPPORTED_GENERATION_FIELDS & generation.keys():
        raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
    rules = rules_for(model, api)
    text_only = rules is not None and "AUDIO" not in rules.outputs
    modality = _modality(generation, "TEXT" if text_only else "AUDIO")
    refusal = check_setup(model, api, setup, api_version)
    if refusal is not None:
        raise Close(refusal.code, refusal.reason)
    realtime = setup.get("realtimeInputConfig", {})
    handling = _name(realtime.get("activityHandling", ""), _HANDLING_NUMBERS)
    resumption = setup.get("sessionResumption")
    declarations = _declarations(setup.get("tools", []))
    return SessionOptions(
        model=model,
        modality=modality,
        input_transcription="inputAudioTranscription" in setup,
        output_transcription="outputAudioTranscription" in setup,
        vad=_vad(realtime),
        barge_in=handling != "NO_INTERRUPTION",
        functions=frozenset(declaration["name"] for declaration in declarations),
        non_blocking=_non_blocking(declarations, rules),
        interaction_status=rules is not None and rules.interaction_status,
        include_thoughts=bool(generation.get("thinkingConfig", {}).get("includeThoughts")),
        transcribe_only=rules is not None and rules.transcribe_only,
        resumption=resumption is not None,
        handle=(resumption or {}).get("handle") or None,
        transparent=api == "vertex" and bool((resumption or {}).get("transparent")),
        system_text=_text_of(setup.get("systemInstruction")),
    )
