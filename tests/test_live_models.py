"""Each Live model's rules on a setup (protocol/live_models.py), as plain sync calls."""

from __future__ import annotations

from typing import Any

import pytest

from liveproxy.protocol.closes import model_not_found, truncate_reason
from liveproxy.protocol.live_models import (
    LIVE_MODELS,
    SHUT_DOWN,
    Backend,
    Refusal,
    check_setup,
    model_id,
    rules_for,
)

LIVE = "gemini-3.8-live"
EXTENDED = "gemini-3.8-live-extended-thinking"
TRANSCRIBE = "gemini-3.5-transcribe-live"
PREVIEW = "gemini-3.1-flash-live-preview"
NATIVE_12 = "gemini-2.5-flash-native-audio-preview-12-2025"
VERTEX_PREFIX = "projects/p/locations/l/publishers/google/models/"

TEXT_REFUSED = Refusal(
    1007,
    "The text content type (CONTENT_TYPE_TEXT) is not supported for this model configuration.",
)
AUDIO_REFUSED = Refusal(
    1007,
    "The audio content type (CONTENT_TYPE_AUDIO) is not supported for this model configuration.",
)
THINKING_REFUSED = Refusal(1007, "thinking_config is not supported.")
AFFECTIVE_REFUSED = Refusal(
    1007,
    'Invalid JSON payload received. Unknown name "enable_affective_dialog" at '
    "'setup.generation_config': Cannot find field.",
)
PROACTIVE_REFUSED = Refusal(1007, "proactive_audio is always enabled for this model: omit it.")
BLOCKING_REFUSED = Refusal(
    1007,
    "Function calling behavior BLOCKING is not supported for this model: "
    "declare functions NON_BLOCKING.",
)


def generation(**fields: Any) -> dict[str, Any]:
    return {"generationConfig": fields}


def functions(*behaviors: Any) -> dict[str, Any]:
    """A setup declaring one function per behaviour (None: no ``behavior`` field)."""
    declarations: list[dict[str, Any]] = []
    for index, behavior in enumerate(behaviors):
        declaration: dict[str, Any] = {"name": f"f{index}"}
        if behavior is not None:
            declaration["behavior"] = behavior
        declarations.append(declaration)
    return {"tools": [{"googleSearch": {}}, {"functionDeclarations": declarations}]}


def test_the_lists_of_each_backend() -> None:
    assert list(LIVE_MODELS["developer"]) == [
        LIVE,
        EXTENDED,
        TRANSCRIBE,
        PREVIEW,
        NATIVE_12,
        "gemini-2.5-flash-native-audio-preview-09-2025",
    ]
    assert list(LIVE_MODELS["vertex"]) == [
        LIVE,
        "gemini-live-2.5-flash-native-audio",
        "gemini-3.5-transcribe-live-preview",
    ]
    assert SHUT_DOWN["developer"] == {"gemini-live-2.5-flash-preview", "gemini-2.0-flash-live-001"}
    assert not SHUT_DOWN["vertex"]
    assert not (set(LIVE_MODELS["developer"]) & SHUT_DOWN["developer"])


@pytest.mark.parametrize(
    ("model", "backend", "setup", "refusal"),
    [
        # gemini-3.8-live: AUDIO out only, no thinkingConfig, proactive audio always on, no
        # affective-dialog switch on the Developer API.
        (LIVE, "developer", generation(responseModalities=["TEXT"]), TEXT_REFUSED),
        (LIVE, "developer", generation(responseModalities=[1]), TEXT_REFUSED),  # enum number
        (LIVE, "developer", generation(thinkingConfig={}), THINKING_REFUSED),
        (LIVE, "developer", generation(thinkingConfig={"thinkingBudget": 0}), THINKING_REFUSED),
        (LIVE, "developer", generation(enableAffectiveDialog=True), AFFECTIVE_REFUSED),
        (LIVE, "developer", generation(enableAffectiveDialog=False), AFFECTIVE_REFUSED),
        (LIVE, "developer", {"proactivity": {"proactiveAudio": False}}, PROACTIVE_REFUSED),
        (LIVE, "vertex", generation(responseModalities=["TEXT"]), TEXT_REFUSED),
        (LIVE, "vertex", generation(thinkingConfig={}), THINKING_REFUSED),
        (LIVE, "vertex", {"proactivity": {"proactiveAudio": False}}, PROACTIVE_REFUSED),
        # The extended-thinking variant: LOW/MEDIUM/HIGH, and only NON_BLOCKING functions.
        (
            EXTENDED,
            "developer",
            generation(thinkingConfig={"thinkingLevel": "MINIMAL"}),
            Refusal(
                1007,
                "'minimal' is not a supported thinking level for this model. "
                "Allowed values are: low, medium, high.",
            ),
        ),
        (EXTENDED, "developer", functions("NON_BLOCKING", "BLOCKING"), BLOCKING_REFUSED),
        (EXTENDED, "developer", functions(1), BLOCKING_REFUSED),  # the enum number
        (EXTENDED, "developer", generation(responseModalities=["TEXT"]), TEXT_REFUSED),
        (EXTENDED, "developer", generation(enableAffectiveDialog=True), AFFECTIVE_REFUSED),
        (EXTENDED, "developer", {"proactivity": {"proactiveAudio": False}}, PROACTIVE_REFUSED),
        # Transcription only: TEXT out.
        (TRANSCRIBE, "developer", generation(responseModalities=["AUDIO"]), AUDIO_REFUSED),
        (TRANSCRIBE, "developer", generation(responseModalities=[3]), AUDIO_REFUSED),
        (TRANSCRIBE, "developer", generation(thinkingConfig={}), THINKING_REFUSED),
        (
            "gemini-3.5-transcribe-live-preview",
            "vertex",
            generation(responseModalities=["AUDIO"]),
            AUDIO_REFUSED,
        ),
        # The older models.
        (PREVIEW, "developer", generation(enableAffectiveDialog=True), AFFECTIVE_REFUSED),
        (NATIVE_12, "developer", generation(responseModalities=["TEXT"]), TEXT_REFUSED),
        (
            "gemini-live-2.5-flash-native-audio",
            "vertex",
            generation(responseModalities=["TEXT"]),
            TEXT_REFUSED,
        ),
    ],
)
def test_each_models_refusals(
    model: str, backend: Backend, setup: dict[str, Any], refusal: Refusal
) -> None:
    assert check_setup(model, backend, setup) == refusal
    # Any spelling of the model is the same model.
    spelt = f"models/{model}" if backend == "developer" else VERTEX_PREFIX + model
    assert check_setup(spelt, backend, setup) == refusal


@pytest.mark.parametrize(
    ("model", "backend", "setup"),
    [
        (LIVE, "developer", {}),
        (LIVE, "developer", generation(responseModalities=["AUDIO"])),
        (LIVE, "developer", {"proactivity": {"proactiveAudio": True}}),
        (LIVE, "developer", functions(None, "NON_BLOCKING", "BLOCKING", "UNSPECIFIED")),
        # Affective dialog and proactive audio are on by default on Vertex, and may be set.
        (LIVE, "vertex", generation(enableAffectiveDialog=True)),
        (LIVE, "vertex", generation(enableAffectiveDialog=False, responseModalities=["AUDIO"])),
        *[
            (EXTENDED, "developer", generation(thinkingConfig={"thinkingLevel": level}))
            for level in ("LOW", "MEDIUM", "HIGH", "high", "THINKING_LEVEL_UNSPECIFIED")
        ],
        (EXTENDED, "developer", generation(thinkingConfig={"includeThoughts": True})),
        (EXTENDED, "developer", functions(None, "NON_BLOCKING", 2)),
        (TRANSCRIBE, "developer", {}),
        (TRANSCRIBE, "developer", generation(responseModalities=["TEXT"])),
        (TRANSCRIBE, "developer", {"inputAudioTranscription": {}}),
        (PREVIEW, "developer", generation(responseModalities=["TEXT"])),
        (PREVIEW, "developer", generation(thinkingConfig={"thinkingLevel": "MINIMAL"})),
        (PREVIEW, "developer", functions("BLOCKING")),
        (NATIVE_12, "developer", generation(enableAffectiveDialog=True)),
        (NATIVE_12, "developer", {"proactivity": {"proactiveAudio": False}}),
        (NATIVE_12, "developer", generation(thinkingConfig={"thinkingBudget": 0})),
        # IMAGE is the Live API's own refusal, not a model's.
        (LIVE, "developer", generation(responseModalities=["AUDIO", "IMAGE"])),
    ],
)
def test_each_models_acceptances(model: str, backend: Backend, setup: dict[str, Any]) -> None:
    assert check_setup(model, backend, setup) is None


@pytest.mark.parametrize("model", sorted(SHUT_DOWN["developer"]))
@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
def test_a_shut_down_model_is_not_found(model: str, api_version: str) -> None:
    reason = model_not_found(f"models/{model}", api_version)
    for spelt in (model, f"models/{model}"):
        assert check_setup(spelt, "developer", {}, api_version) == Refusal(1008, reason)
    # Whatever the setup asks for.
    setup = generation(responseModalities=["TEXT"])
    assert check_setup(model, "developer", setup, api_version) == Refusal(1008, reason)
    # Vertex never served them: not shut down there, just not in its table (unchecked).
    assert check_setup(VERTEX_PREFIX + model, "vertex", {}) is None


@pytest.mark.parametrize(
    ("model", "backend"),
    [
        ("models/gemini-9-live", "developer"),
        ("tunedModels/mine", "developer"),
        (VERTEX_PREFIX + "gemini-9-live", "vertex"),
        # A model of the other backend's table is unknown here.
        (VERTEX_PREFIX + PREVIEW, "vertex"),
        ("models/gemini-live-2.5-flash-native-audio", "developer"),
    ],
)
def test_an_unknown_model_is_not_checked(model: str, backend: Backend) -> None:
    assert rules_for(model, backend) is None
    anything = {
        **generation(responseModalities=["TEXT"], thinkingConfig={"thinkingLevel": "MINIMAL"}),
        "proactivity": {"proactiveAudio": False},
        **functions("BLOCKING"),
    }
    assert check_setup(model, backend, anything) is None


def test_model_ids_and_rules() -> None:
    assert model_id("models/gemini-3.8-live") == LIVE
    assert model_id(VERTEX_PREFIX + LIVE) == LIVE
    assert model_id(LIVE) == LIVE
    live = rules_for(LIVE, "developer")
    assert live is not None
    assert (live.default_behavior, live.blocking_functions, live.interaction_status) == (
        "NON_BLOCKING",
        True,
        False,
    )
    extended = rules_for(f"models/{EXTENDED}", "developer")
    assert extended is not None
    assert (extended.default_behavior, extended.blocking_functions) == ("NON_BLOCKING", False)
    assert extended.interaction_status
    transcribe = rules_for(TRANSCRIBE, "developer")
    assert transcribe is not None
    assert transcribe.transcribe_only
    assert transcribe.outputs == {"TEXT"}
    preview = rules_for(PREVIEW, "developer")
    assert preview is not None
    assert preview.default_behavior == "BLOCKING"


REFUSING: list[tuple[str, Backend, dict[str, Any]]] = [
    (LIVE, "developer", generation(responseModalities=["TEXT"])),
    (LIVE, "developer", generation(thinkingConfig={})),
    (LIVE, "developer", generation(enableAffectiveDialog=True)),
    (LIVE, "developer", {"proactivity": {"proactiveAudio": False}}),
    (EXTENDED, "developer", generation(thinkingConfig={"thinkingLevel": "MINIMAL"})),
    (EXTENDED, "developer", functions("BLOCKING")),
    (TRANSCRIBE, "developer", generation(responseModalities=["AUDIO"])),
    *[(model, "developer", {}) for model in sorted(SHUT_DOWN["developer"])],
]


@pytest.mark.parametrize(("model", "backend", "setup"), REFUSING)
def test_every_refusal_fits_a_close_frame_once_cut(
    model: str, backend: Backend, setup: dict[str, Any]
) -> None:
    refusal = check_setup(model, backend, setup)
    assert refusal is not None
    cut = truncate_reason(refusal.reason)
    assert len(cut.encode()) <= 123
    if len(refusal.reason.encode()) <= 123:
        assert cut == refusal.reason  # the model rules' own reasons fit whole
    else:
        # The not-found reason is longer: cut at exactly 123 bytes, as Google cuts it.
        assert cut.encode() == refusal.reason.encode()[:123]
        assert "is not found for API version v1beta" in cut
