"""The emulator's pure rules: routes, credentials, setup options, texts, message shapes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import trio

from liveproxy.emulator import EmulatorConfig, Faults, messages
from liveproxy.emulator.auth import BEARER_INVALID, TOKEN_INVALID, find_credential, refusal
from liveproxy.emulator.calls import Answer, Calls
from liveproxy.emulator.catalog import ModelCatalog, vertex_not_found
from liveproxy.emulator.endings import Close
from liveproxy.emulator.interaction import Interaction
from liveproxy.emulator.options import SessionOptions, read_setup
from liveproxy.emulator.pending import Pending
from liveproxy.emulator.record import Api
from liveproxy.emulator.replies import asks_to_think, fragments, parse_call, tool_result
from liveproxy.emulator.routes import Route, match_route, split_target
from liveproxy.emulator.store import Checkpoint, HandleStore, SessionState
from liveproxy.emulator.turns import Call, Turn
from liveproxy.emulator.vad import VadSettings
from liveproxy.protocol.closes import (
    API_KEY_INVALID,
    INVALID_ARGUMENT,
    UNREGISTERED_CALLER,
    model_not_found,
)
from liveproxy.protocol.live_models import LIVE_MODELS

DEV = Route("developer", "v1beta", "BidiGenerateContent")
CONSTRAINED = Route("developer", "v1alpha", "BidiGenerateContentConstrained")
VERTEX = Route("vertex", "v1beta1", "BidiGenerateContent")


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent", DEV),
        (
            "//ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
            Route("developer", "v1", "BidiGenerateContent"),
        ),
        (
            "/ws/google.ai.generativelanguage.v1alpha.GenerativeService"
            ".BidiGenerateContentConstrained",
            CONSTRAINED,
        ),
        ("///ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent", VERTEX),
        (
            "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
            Route("vertex", "v1", "BidiGenerateContent"),
        ),
        ("/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent", None),
        ("/ws/google.cloud.aiplatform.v1beta1.LlmBidiService.BidiGenerateContent", None),
        ("/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContentX", None),
        ("/", None),
    ],
)
def test_match_route(path: str, route: Route | None) -> None:
    assert match_route(path) == route


def test_split_target() -> None:
    assert split_target("/ws/x?key=a&alt=&key=b") == ("/ws/x", {"key": "b", "alt": ""})
    assert split_target("/ws/x") == ("/ws/x", {})


@pytest.mark.parametrize(
    ("headers", "query", "found"),
    [
        ({"x-goog-api-key": "k1"}, {}, ("k1", "api_key")),
        ({}, {"key": "k2"}, ("k2", "api_key")),
        ({"authorization": "Bearer t1"}, {}, ("t1", "bearer")),
        ({"authorization": "token auth_tokens/t2"}, {}, ("auth_tokens/t2", "token")),
        ({}, {"access_token": "auth_tokens/t3"}, ("auth_tokens/t3", "access_token")),
        # The Python SDK sends both for ephemeral tokens: the Authorization header wins.
        ({"authorization": "Token a", "x-goog-api-key": "a"}, {}, ("a", "token")),
        ({"x-goog-api-key": "h"}, {"key": "q"}, ("h", "api_key")),
        ({"authorization": "Basic abc"}, {}, None),
        ({"authorization": "Bearer ", "x-goog-api-key": " "}, {"key": ""}, None),
        ({}, {}, None),
    ],
)
def test_find_credential(
    headers: dict[str, str], query: dict[str, str], found: tuple[str, str] | None
) -> None:
    assert find_credential(headers, query) == found


@pytest.mark.parametrize(
    ("found", "route", "keys", "expected"),
    [
        (None, DEV, (), Close(1008, UNREGISTERED_CALLER)),
        (("anything", "api_key"), DEV, (), None),
        (("good", "api_key"), DEV, ("good",), None),
        (("bad", "api_key"), DEV, ("good",), Close(1007, API_KEY_INVALID)),
        (("bad", "bearer"), VERTEX, ("good",), Close(1008, BEARER_INVALID)),
        (("good", "bearer"), VERTEX, ("good",), None),
        (("bad", "token"), CONSTRAINED, ("good",), Close(1007, TOKEN_INVALID)),
        (("good", "access_token"), CONSTRAINED, ("good",), None),
        (("good", "token"), DEV, ("good",), Close(1008, UNREGISTERED_CALLER)),
    ],
)
def test_refusal(found: Any, route: Route, keys: tuple[str, ...], expected: Close | None) -> None:
    got = refusal(found, route, keys)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert (got.code, got.reason) == (expected.code, expected.reason)


VERTEX_PREFIX = "projects/p/locations/l/publishers/google/models/"


@pytest.mark.parametrize(
    ("model", "api", "accepted"),
    [
        *[("models/" + m, "developer", True) for m in LIVE_MODELS["developer"]],
        *[(VERTEX_PREFIX + m, "vertex", True) for m in LIVE_MODELS["vertex"]],
        ("publishers/google/models/gemini-live-2.5-flash-native-audio", "vertex", True),  # express
        # Shut down (Developer API), or no longer listed (Vertex).
        ("models/gemini-live-2.5-flash-preview", "developer", False),
        ("models/gemini-2.0-flash-live-001", "developer", False),
        (VERTEX_PREFIX + "gemini-live-2.5-flash", "vertex", False),
        # A typo, or a name only the other backend serves, or in the other backend's spelling.
        ("models/gemini-3.8-lvie", "developer", False),
        ("models/gemini-live-2.5-flash", "developer", False),
        (VERTEX_PREFIX + "gemini-live-2.5-flash-preview", "vertex", False),
        ("models/gemini-live-2.5-flash", "vertex", False),
        (VERTEX_PREFIX + "gemini-3.8-live", "developer", False),
        ("gemini-3.8-live", "developer", False),
        ("tunedModels/mine", "developer", False),
        ("projects/p/locations/l/publishers/other/models/gemini-live-2.5-flash", "vertex", False),
    ],
)
def test_googles_list_by_default(model: str, api: Api, accepted: bool) -> None:
    assert ModelCatalog().serves(model, api) is accepted


@pytest.mark.parametrize(
    ("model", "catalog", "accepted"),
    [
        ("models/gemini-x", ModelCatalog(any_model=True), True),
        ("tunedModels/mine", ModelCatalog(any_model=True), True),
        (VERTEX_PREFIX + "gemini-x", ModelCatalog(any_model=True), True),
        ("publishers/google/models/gemini-x", ModelCatalog(any_model=True), True),
        ("gemini-x", ModelCatalog(any_model=True), False),
        ("models/", ModelCatalog(any_model=True), False),
        # Extra names come on top of Google's list.
        ("models/gemini-x", ModelCatalog(extra=("models/gemini-x",)), True),
        ("models/gemini-3.8-live", ModelCatalog(extra=("models/gemini-x",)), True),
        ("models/gemini-y", ModelCatalog(extra=("models/gemini-x",)), False),
        (VERTEX_PREFIX + "gemini-x", ModelCatalog(extra=("gemini-x",)), True),
        ("models/gemini-x", ModelCatalog(extra=("gemini-x",)), True),
        ("models/other-gemini-x", ModelCatalog(extra=("gemini-x",)), False),
        # A listed tuple replaces Google's list.
        ("models/gemini-x", ModelCatalog(listed=("gemini-x",)), True),
        ("models/gemini-3.8-live", ModelCatalog(listed=("gemini-x",)), False),
        ("models/gemini-3.8-live", ModelCatalog(listed=()), False),
        ("models/gemini-y", ModelCatalog(listed=("gemini-x",), extra=("gemini-y",)), True),
    ],
)
def test_configured_models(model: str, catalog: ModelCatalog, accepted: bool) -> None:
    assert catalog.serves(model, "developer") is accepted


def setup_of(**fields: Any) -> dict[str, Any]:
    return {"model": "models/gemini-3.8-live", **fields}


ANY = ModelCatalog(any_model=True)


def test_read_setup_defaults() -> None:
    options = read_setup(setup_of(), api="developer", api_version="v1beta", models=ANY)
    assert options.modality == "AUDIO"
    assert not options.input_transcription
    assert not options.output_transcription
    assert options.vad == VadSettings(threshold=300, start_ms=40, silence_ms=500, padding_ms=100)
    assert options.barge_in
    assert not options.resumption
    assert options.handle is None


def test_read_setup_options() -> None:
    options = read_setup(
        setup_of(
            model="models/gemini-3.1-flash-live-preview",
            generationConfig={"responseModalities": ["TEXT"]},
            inputAudioTranscription={},
            outputAudioTranscription={},
            realtimeInputConfig={
                "automaticActivityDetection": {
                    "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
                    "silenceDurationMs": "250",
                    "prefixPaddingMs": 20,
                },
                "activityHandling": "NO_INTERRUPTION",
            },
            tools=[{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}, {"googleSearch": {}}],
            sessionResumption={"handle": "h"},
            systemInstruction={"parts": [{"text": "Be brief."}]},
        ),
        api="developer",
        api_version="v1beta",
        models=ANY,
    )
    assert options.modality == "TEXT"
    assert options.input_transcription
    assert options.output_transcription
    assert options.vad == VadSettings(threshold=1000, start_ms=40, silence_ms=250, padding_ms=20)
    assert not options.barge_in
    assert options.functions == {"f", "g"}
    assert options.resumption
    assert options.handle == "h"
    assert options.system_text == "Be brief."


def test_read_setup_enum_numbers_and_disabled_vad() -> None:
    options = read_setup(
        setup_of(
            model="models/gemini-3.1-flash-live-preview",
            generationConfig={"responseModalities": [1]},
            realtimeInputConfig={"automaticActivityDetection": {"disabled": True}},
            sessionResumption={},
        ),
        api="developer",
        api_version="v1",
        models=ANY,
    )
    assert options.modality == "TEXT"
    assert options.vad is None
    assert options.resumption
    assert options.handle is None
    low_end = read_setup(
        setup_of(
            realtimeInputConfig={
                "automaticActivityDetection": {"endOfSpeechSensitivity": "END_SENSITIVITY_LOW"}
            }
        ),
        api="developer",
        api_version="v1",
        models=ANY,
    )
    assert low_end.vad is not None
    assert low_end.vad.silence_ms == 1000


@pytest.mark.parametrize(
    ("setup", "code", "reason"),
    [
        ({}, 1007, INVALID_ARGUMENT),
        ({"model": ""}, 1007, INVALID_ARGUMENT),
        (
            setup_of(generationConfig={"responseModalities": ["TEXT", "AUDIO"]}),
            1007,
            INVALID_ARGUMENT,
        ),
        (setup_of(generationConfig={"responseModalities": ["IMAGE"]}), 1007, INVALID_ARGUMENT),
        (
            setup_of(generationConfig={"responseMimeType": "application/json"}),
            1007,
            INVALID_ARGUMENT,
        ),
        ({"model": "models/other"}, 1008, model_not_found("models/other", "v1alpha")),
    ],
)
def test_read_setup_refusals(setup: dict[str, Any], code: int, reason: str) -> None:
    with pytest.raises(Close) as caught:
        read_setup(setup, api="developer", api_version="v1alpha", models=ModelCatalog())
    assert (caught.value.code, caught.value.reason) == (code, reason)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        # The Live API's own rules come first: two modalities, whatever the model.
        (
            setup_of(generationConfig={"responseModalities": ["TEXT", "AUDIO"]}),
            INVALID_ARGUMENT,
        ),
        (
            setup_of(generationConfig={"responseModalities": ["TEXT"]}),
            "The text content type (CONTENT_TYPE_TEXT) is not supported for this model "
            "configuration.",
        ),
        (setup_of(generationConfig={"thinkingConfig": {}}), "thinking_config is not supported."),
        (
            setup_of(proactivity={"proactiveAudio": False}),
            "proactive_audio is always enabled for this model: omit it.",
        ),
        (
            {
                "model": "models/gemini-3.8-live-extended-thinking",
                "tools": [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}],
            },
            "Function calling behavior BLOCKING is not supported for this model: "
            "declare functions NON_BLOCKING.",
        ),
    ],
)
@pytest.mark.parametrize("catalog", [ModelCatalog(), ANY, ModelCatalog(extra=("gemini-x",))])
def test_read_setup_applies_the_models_rules_however_it_is_served(
    setup: dict[str, Any], reason: str, catalog: ModelCatalog
) -> None:
    with pytest.raises(Close) as caught:
        read_setup(setup, api="developer", api_version="v1beta", models=catalog)
    assert (caught.value.code, caught.value.reason) == (1007, reason)


def test_a_model_outside_the_table_has_no_rules() -> None:
    anything = {
        "generationConfig": {"responseModalities": ["TEXT"], "thinkingConfig": {}},
        "proactivity": {"proactiveAudio": False},
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
    }
    for model, catalog in (
        ("models/gemini-x", ModelCatalog(extra=("gemini-x",))),
        ("tunedModels/mine", ANY),
    ):
        options = read_setup(
            {"model": model, **anything}, api="developer", api_version="v1", models=catalog
        )
        assert options.modality == "TEXT"
        assert options.functions == {"f"}
        assert not options.non_blocking  # every call blocks, as on the older models
        assert (options.interaction_status, options.transcribe_only) == (False, False)


def test_a_shut_down_model_is_not_found_even_when_served_by_name() -> None:
    model = "models/gemini-2.0-flash-live-001"
    for catalog in (ModelCatalog(), ANY, ModelCatalog(extra=(model,))):
        with pytest.raises(Close) as caught:
            read_setup({"model": model}, api="developer", api_version="v1", models=catalog)
        assert (caught.value.code, caught.value.reason) == (1008, model_not_found(model, "v1"))


def _developer(setup: dict[str, Any]) -> SessionOptions:
    return read_setup(setup, api="developer", api_version="v1beta", models=ModelCatalog())


def test_which_calls_do_not_wait() -> None:
    declared = [
        {"name": "plain"},
        {"name": "quick", "behavior": "NON_BLOCKING"},
        {"name": "slow", "behavior": "BLOCKING"},
        {"name": "unsaid", "behavior": "UNSPECIFIED"},
        {"name": "numbered", "behavior": 1},
    ]
    tools = {"tools": [{"functionDeclarations": declared}]}
    live = _developer({"model": "models/gemini-3.8-live", **tools})
    assert live.functions == {"plain", "quick", "slow", "unsaid", "numbered"}
    assert live.non_blocking == {"plain", "quick", "unsaid"}
    # The older models: every call blocks, as before, whatever the declaration says.
    older = _developer({"model": "models/gemini-2.5-flash-native-audio-preview-12-2025", **tools})
    assert older.functions == live.functions
    assert not older.non_blocking
    extended = _developer(
        {
            "model": "models/gemini-3.8-live-extended-thinking",
            "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b", "behavior": 2}]}],
        }
    )
    assert extended.non_blocking == {"a", "b"}


def test_what_each_model_does_differently() -> None:
    live = _developer({"model": "models/gemini-3.8-live"})
    assert (live.modality, live.interaction_status, live.transcribe_only) == ("AUDIO", False, False)
    extended = _developer(
        {
            "model": "models/gemini-3.8-live-extended-thinking",
            "generationConfig": {
                "thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True}
            },
        }
    )
    assert (extended.modality, extended.interaction_status) == ("AUDIO", True)
    assert extended.include_thoughts
    assert not _developer({"model": "models/gemini-3.8-live-extended-thinking"}).include_thoughts
    # A transcription model answers in TEXT, asked for or not.
    for generation in ({}, {"responseModalities": ["TEXT"]}, {"responseModalities": [0]}):
        transcribe = _developer(
            {"model": "models/gemini-3.5-transcribe-live", "generationConfig": generation}
        )
        assert (transcribe.modality, transcribe.transcribe_only) == ("TEXT", True)


def test_vertex_refuses_a_model_with_its_own_reason() -> None:
    model = VERTEX_PREFIX + "gemini-3.1-flash-live-preview"  # a Developer API model
    with pytest.raises(Close) as caught:
        read_setup({"model": model}, api="vertex", api_version="v1", models=ModelCatalog())
    assert caught.value.code == 1008
    assert caught.value.reason == vertex_not_found(model)
    assert caught.value.reason.startswith(f"Publisher Model `{model}` ")


@pytest.mark.parametrize(
    ("text", "call"),
    [
        ('call get_weather {"location": "Tokyo"}', ("get_weather", {"location": "Tokyo"})),
        ("  call get_weather  ", ("get_weather", {})),
        ("call undeclared {}", None),
        ("call get_weather [1]", None),
        ("call get_weather {not json}", None),
        ("please call get_weather {}", None),
    ],
)
def test_parse_call(text: str, call: tuple[str, dict[str, Any]] | None) -> None:
    assert parse_call(text, frozenset({"get_weather"})) == call


def test_tool_result_and_fragments() -> None:
    assert tool_result("f", {"tempC": 21}) == 'f returned {"tempC":21}'
    assert fragments('You said: "a  b"') == ["You", " said:", ' "a', '  b"']
    assert "".join(fragments(" x y ")) == "x y"
    assert fragments("") == []


@pytest.mark.parametrize(
    ("text", "thinks"),
    [
        ("think about lunch", True),
        ("Think!", True),
        ("what do you THINK of it", True),
        ("thinking", False),
        ("rethink", False),
        ("hello", False),
    ],
)
def test_asks_to_think(text: str, thinks: bool) -> None:
    assert asks_to_think(text) is thinks


def test_calls_cancelled_answered_and_owed() -> None:
    calls = Calls(cancelled=set())
    blocking = Turn(call=Call("c1", "f", {}))
    queued = Turn(call=Call("c2", "f", {}, blocking=False))
    out = Turn(call=Call("c3", "f", {}, blocking=False), called=True)
    for turn in (blocking, queued, out):
        calls.add(turn)
    assert calls.results_owed()
    # Barge-in cancels a blocking call and one not yet sent, not a NON_BLOCKING one already out.
    for turn in (blocking, queued, out):
        calls.cancel(turn)
    assert calls.cancelled == {"c1", "c2"}
    assert calls.answer({"id": "c1", "response": {}}) is None  # late: ignored
    # Vertex: no id, the oldest pending call of that name (c3, the others are cancelled).
    response = {"name": "f", "response": {"a": 1}, "willContinue": True}
    assert calls.answer(response) == Answer('f returned {"a":1}', response, blocking=False)
    assert calls.results_owed()  # c3 will continue
    assert calls.answer({"id": "c3", "response": {}}) is not None
    assert not calls.results_owed()
    with pytest.raises(Close) as caught:
        calls.answer({"id": "c3", "response": {}})
    assert (caught.value.code, caught.value.reason) == (1008, "Requested entity was not found.")
    waiting = Turn(call=Call("c4", "g", {}))
    calls.add(waiting)
    assert not calls.results_owed()  # a blocking call's own turn is what is owed
    taken = calls.answer({"id": "c4", "response": {"ok": True}})
    assert taken is not None
    assert taken.blocking
    assert waiting.answered.is_set()
    assert waiting.result == 'g returned {"ok":true}'


def test_usage_counts_thoughts_in_the_total_only() -> None:
    assert messages.usage({"TEXT": 4}, {"AUDIO": 10}, vertex=False, thoughts=6) == {
        "promptTokenCount": 4,
        "responseTokenCount": 10,
        "thoughtsTokenCount": 6,
        "totalTokenCount": 20,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 10}],
    }


def test_interaction_status_stamps_the_first_message_and_every_turn_complete() -> None:
    part = messages.model_text("x")
    silent = Interaction(reports=False)
    assert silent.stamp(part) == part
    assert silent.at_turn_complete(goes_on=True) is None
    assert silent.settle() is None
    status = Interaction(reports=True)
    assert status.settle() is None  # nothing under way
    assert status.stamp(part)["serverContent"]["interactionStatus"] == "IN_PROGRESS"
    assert status.stamp(part) == part  # only the first message of the interaction
    assert status.stamp(messages.go_away(1)) == messages.go_away(1)
    assert status.at_turn_complete(goes_on=True) == "IN_PROGRESS"
    assert status.stamp(part) == part
    assert status.at_turn_complete(goes_on=False) == "IDLE"
    assert status.settle() is None
    # A new interaction; this time ended by a silent tool result.
    assert status.stamp(part)["serverContent"]["interactionStatus"] == "IN_PROGRESS"
    assert status.settle() == {"serverContent": {"interactionStatus": "IDLE"}}
    assert status.settle() is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(50, "50s"), (9.5, "9.500s"), (0, "0s"), (0.0004, "0s"), (1.25, "1.250s")]
)
def test_duration(seconds: float, text: str) -> None:
    assert messages.duration(seconds) == text


def test_usage_shapes_per_api() -> None:
    prompt = {"AUDIO": 10, "TEXT": 2, "IMAGE": 0}
    assert messages.usage(prompt, {"AUDIO": 5}, vertex=False) == {
        "promptTokenCount": 12,
        "responseTokenCount": 5,
        "totalTokenCount": 17,
        "promptTokensDetails": [
            {"modality": "AUDIO", "tokenCount": 10},
            {"modality": "TEXT", "tokenCount": 2},
        ],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}],
    }
    vertex = messages.usage(prompt, {"TEXT": 0}, vertex=True)
    assert vertex == {
        "promptTokenCount": 12,
        "totalTokenCount": 12,
        "promptTokensDetails": vertex["promptTokensDetails"],
    }


async def test_handles_expire_after_their_ttl(autojump_clock: trio.testing.MockClock) -> None:
    store = HandleStore(ttl=100.0)
    state = SessionState("s1", turns=2, context={"TEXT": 5})
    state.hear_audio(b"\x01\x02")
    pending = Pending(text=["half a"])
    first = store.issue(Checkpoint(state, pending, 3))
    state.context["TEXT"] = 99
    state.hear_audio(b"\x03")
    pending.text.append("turn")
    resumed = store.resume(first)
    assert resumed is not None
    assert resumed.state == SessionState("s1", turns=2, context={"TEXT": 5}, audio_bytes=2)
    assert resumed.state.audio_sha256 == hashlib.sha256(b"\x01\x02").hexdigest()
    assert (resumed.pending.text, resumed.last_consumed) == (["half a"], 3)
    resumed.state.turns = 7
    resumed.state.hear_audio(b"\x04")
    resumed.pending.text.clear()
    again = store.resume(first)
    assert again is not None
    assert again.state == SessionState("s1", turns=2, context={"TEXT": 5}, audio_bytes=2)
    assert again.state.audio_sha256 == hashlib.sha256(b"\x01\x02").hexdigest()
    assert again.pending.text == ["half a"]
    await trio.sleep(60)
    second = store.issue(Checkpoint(state, pending, 0))
    await trio.sleep(50)
    assert store.resume(first) is None
    assert store.resume(second) is not None
    assert store.resume("unknown") is None
    store.issue(Checkpoint(state, pending, 0))
    assert len(store) == 2  # the expired first handle was purged


def test_config_values_are_checked() -> None:
    config = EmulatorConfig(api_keys="one-key", models=["models/a", "models/b"])
    assert config.api_keys == ("one-key",)
    assert config.models == ("models/a", "models/b")
    assert EmulatorConfig(extra_models="models/c").extra_models == ("models/c",)
    default = EmulatorConfig()
    assert (default.models, default.extra_models, default.any_model) == (None, (), False)
    for bad in (
        {"tls_cert": "cert.pem"},
        {"speed": "slow"},
        {"mode": "mirror"},
        {"lifetime_seconds": 0},
        {"go_away_lead_seconds": -1},
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            EmulatorConfig(**bad)
    bad_faults: list[dict[str, Any]] = [
        {"close_code": 1005},
        {"close_code": 999},
        {"close_after": -1},
    ]
    for faults in bad_faults:
        with pytest.raises(ValueError):  # noqa: PT011
            Faults(**faults)
