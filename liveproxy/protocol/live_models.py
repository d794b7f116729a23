"""Today's Gemini Live models and the rules each enforces on a setup: one table, two users.

The emulator refuses a setup its model would refuse, with Google's close code and wording; the
proxy refuses a browser's setup for a known model at once (``invalid_setup``, 1007, the same
wording), before a Gemini connection is spent. A model not in the table is passed on unchecked,
so a new Google model works the day it ships.

The facts (late 2026): ``gemini-3.8-live`` (GA, the default) outputs AUDIO only, refuses any
``thinkingConfig``, keeps proactive audio always on (``proactiveAudio: false`` is refused), has
no affective-dialog switch on the Developer API, and calls functions ``NON_BLOCKING`` by default.
``gemini-3.8-live-extended-thinking`` takes ``thinkingLevel`` LOW/MEDIUM/HIGH (no MINIMAL),
only ``NON_BLOCKING`` functions, and reports ``serverContent.interactionStatus``
(``IN_PROGRESS`` until ``IDLE``: it may go on reasoning or calling tools after
``turnComplete``). ``gemini-3.5-transcribe-live`` only transcribes (TEXT out).
``gemini-live-2.5-flash-preview`` and ``gemini-2.0-flash-live-001`` are shut down (1008, not
found).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from liveproxy.protocol.closes import INVALID_PAYLOAD, POLICY, model_not_found

Backend = Literal["developer", "vertex"]

THINKING_LEVELS: Final = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
#: ``Modality`` enum numbers (proto JSON accepts them for the names).
_MODALITY_NUMBERS: Final = {1: "TEXT", 3: "AUDIO"}


@attrs.frozen
class Refusal:
    """What a model answers a setup it refuses: the close code and Google's reason."""

    code: int
    reason: str


@attrs.frozen(kw_only=True)
class ModelRules:
    """What one Live model accepts in a setup."""

    #: Response modalities it can output.
    outputs: frozenset[str] = frozenset({"AUDIO", "TEXT"})
    #: Whether any ``thinkingConfig`` is accepted; and which ``thinkingLevel`` values.
    thinking: bool = True
    thinking_levels: tuple[str, ...] = THINKING_LEVELS
    #: Whether ``generationConfig.enableAffectiveDialog`` is a field it knows.
    affective_dialog: bool = True
    #: Whether ``proactivity.proactiveAudio`` may be false (it is always on otherwise).
    proactive_audio_off: bool = True
    #: Whether a function may be declared ``BLOCKING``.
    blocking_functions: bool = True
    #: The default ``behavior`` of a function declaration.
    default_behavior: str = "BLOCKING"
    #: Whether it reports ``interactionStatus`` (and goes on after ``turnComplete``).
    interaction_status: bool = False
    #: Transcription only: it does not converse.
    transcribe_only: bool = False

    def check(self, setup: Mapping[str, Any]) -> Refusal | None:
        """The refusal of a schema-valid, camelCase ``setup`` body, or None."""
        generation = setup.get("generationConfig") or {}
        for value in generation.get("responseModalities") or ():
            modality = _MODALITY_NUMBERS.get(value, value) if isinstance(value, int) else value
            if modality in ("AUDIO", "TEXT") and modality not in self.outputs:
                return Refusal(INVALID_PAYLOAD, _content_type(modality))
        if "thinkingConfig" in generation:
            if not self.thinking:
                return Refusal(INVALID_PAYLOAD, "thinking_config is not supported.")
            level = (generation["thinkingConfig"] or {}).get("thinkingLevel")
            if (
                isinstance(level, str)
                and level.upper() not in self.thinking_levels
                and level.upper() != "THINKING_LEVEL_UNSPECIFIED"
            ):
                allowed = ", ".join(x.lower() for x in self.thinking_levels)
                return Refusal(
                    INVALID_PAYLOAD,
                    f"'{level.lower()}' is not a supported thinking level for this model. "
                    f"Allowed values are: {allowed}.",
                )
        if "enableAffectiveDialog" in generation and not self.affective_dialog:
            return Refusal(
                INVALID_PAYLOAD,
                'Invalid JSON payload received. Unknown name "enable_affective_dialog" at '
                "'setup.generation_config': Cannot find field.",
            )
        proactivity = setup.get("proactivity") or {}
        if proactivity.get("proactiveAudio") is False and not self.proactive_audio_off:
            return Refusal(
                INVALID_PAYLOAD, "proactive_audio is always enabled for this model: omit it."
            )
        if not self.blocking_functions and _declares_blocking(setup):
            return Refusal(
                INVALID_PAYLOAD,
                "Function calling behavior BLOCKING is not supported for this model: "
                "declare functions NON_BLOCKING.",
            )
        return None


def _content_type(modality: str) -> str:
    """Google's reason for an output modality the model does not produce."""
    kind = modality.lower()
    return (
        f"The {kind} content type (CONTENT_TYPE_{modality}) is not supported for this model "
        "configuration."
    )


def _declares_blocking(setup: Mapping[str, Any]) -> bool:
    return any(
        declaration.get("behavior") in ("BLOCKING", 1)
        for tool in setup.get("tools") or ()
        for declaration in tool.get("functionDeclarations") or ()
    )


_LIVE_3_8: Final = ModelRules(
    outputs=frozenset({"AUDIO"}),
    thinking=False,
    affective_dialog=False,
    proactive_audio_off=False,
    default_behavior="NON_BLOCKING",
)

#: The Live models of each backend (bare ids) and their rules.
LIVE_MODELS: Final[Mapping[Backend, Mapping[str, ModelRules]]] = {
    "developer": {
        "gemini-3.8-live": _LIVE_3_8,
        "gemini-3.8-live-extended-thinking": attrs.evolve(
            _LIVE_3_8,
            thinking=True,
            thinking_levels=("LOW", "MEDIUM", "HIGH"),
            blocking_functions=False,
            interaction_status=True,
        ),
        "gemini-3.5-transcribe-live": ModelRules(
            outputs=frozenset({"TEXT"}), thinking=False, transcribe_only=True
        ),
        "gemini-3.1-flash-live-preview": ModelRules(affective_dialog=False),
        "gemini-2.5-flash-native-audio-preview-12-2025": ModelRules(outputs=frozenset({"AUDIO"})),
        "gemini-2.5-flash-native-audio-preview-09-2025": ModelRules(outputs=frozenset({"AUDIO"})),
    },
    "vertex": {
        # Affective dialog and proactive audio are on by default here, and may be set.
        "gemini-3.8-live": attrs.evolve(_LIVE_3_8, affective_dialog=True),
        "gemini-live-2.5-flash-native-audio": ModelRules(outputs=frozenset({"AUDIO"})),
        "gemini-3.5-transcribe-live-preview": ModelRules(
            outputs=frozenset({"TEXT"}), thinking=False, transcribe_only=True
        ),
    },
}

#: Models Google has shut down: a setup for one is refused as not found (1008).
SHUT_DOWN: Final[Mapping[Backend, frozenset[str]]] = {
    "developer": frozenset({"gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001"}),
    "vertex": frozenset(),
}


def model_id(model: str) -> str:
    """The bare id of a model name of either backend (``models/x``, ``…/models/x``)."""
    return model.rpartition("/")[2]


def rules_for(model: str, backend: Backend) -> ModelRules | None:
    """The rules of ``model`` (any spelling) on ``backend``; None for a model not in the table."""
    return LIVE_MODELS[backend].get(model_id(model))


def check_setup(
    model: str, backend: Backend, setup: Mapping[str, Any], api_version: str = "v1beta"
) -> Refusal | None:
    """How Google refuses ``setup`` (schema-valid, camelCase) for ``model`` on ``backend``, or
    None: a known model's rules, a shut-down model's 1008. An unknown model is not checked."""
    if model_id(model) in SHUT_DOWN[backend]:
        shown = model if model.startswith("models/") else f"models/{model_id(model)}"
        return Refusal(POLICY, model_not_found(shown, api_version))
    rules = rules_for(model, backend)
    return None if rules is None else rules.check(setup)
