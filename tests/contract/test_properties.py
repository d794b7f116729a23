"""Round-trip properties of the browser-facing codec and the browser <-> Gemini translation.

Plain sync hypothesis tests with few examples each, on a fixed seed, so the set runs in about
three seconds with every ``make test``; the long hunts against a real server are ``make fuzz``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveproxy.contract.codec import MAX_RESUME_TOKEN_CHARS, DecodeError, decode_auth_request
from liveproxy.contract.payloads import AuthRequest
from liveproxy.contract.translate import (
    BROWSER_AUDIO_MIME,
    AudioAligner,
    UpstreamDecodeError,
    audio_to_upstream,
    translate_upstream,
    with_session_stats,
)

FEW = settings(max_examples=80, deadline=None, database=None, derandomize=True)

#: The integers orjson reads back as integers (beyond them it reads a float).
JSON_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | JSON_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


def json_values(
    keys: st.SearchStrategy[str], scalars: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=10,
    )


# The codec ------------------------------------------------------------------------------------

auth_requests = st.builds(
    AuthRequest,
    session_duration=st.none() | JSON_INTS,
    resume=st.none() | st.text(min_size=1, max_size=MAX_RESUME_TOKEN_CHARS),
)


@st.composite
def auth_bodies(draw: st.DrawFn, request: AuthRequest) -> bytes:
    """``request`` as a browser may send it: either casing, any key order, an absent field left
    out or given as null, whitespace around."""
    duration_key = draw(st.sampled_from(["session_duration", "sessionDuration"]))
    fields = [(duration_key, request.session_duration), ("resume", request.resume)]
    body = {k: v for k, v in fields if v is not None or draw(st.booleans())}
    items = draw(st.permutations(list(body.items())))
    space = draw(st.sampled_from([b"", b" ", b"\n\t"]))
    return space + orjson.dumps(dict(items)) + space


@FEW
@given(st.data(), auth_requests)
def test_an_auth_request_survives_its_json_in_either_casing(
    data: st.DataObject, request: AuthRequest
) -> None:
    body = data.draw(auth_bodies(request))
    assert decode_auth_request(body) == request


AUTH_KEYS = st.sampled_from(["session_duration", "sessionDuration", "resume"]) | st.text(max_size=6)
garbage_bodies = (
    st.binary(max_size=64)
    | json_values(AUTH_KEYS, JSON_SCALARS).map(orjson.dumps)
    | st.dictionaries(AUTH_KEYS, json_values(AUTH_KEYS, JSON_SCALARS), max_size=3).map(orjson.dumps)
    # Integers past 64 bits, NaN: what orjson would not write, a browser still may.
    | st.dictionaries(AUTH_KEYS, st.integers() | st.floats(), max_size=2).map(
        lambda body: json.dumps(body).encode()
    )
)


@FEW
@given(garbage_bodies)
def test_any_auth_body_decodes_to_a_valid_request_or_a_decode_error(body: bytes) -> None:
    try:
        request = decode_auth_request(body)
    except DecodeError:
        return
    duration, resume = request.session_duration, request.resume
    assert duration is None or (type(duration) is int)
    assert resume is None or (type(resume) is str and 0 < len(resume) <= MAX_RESUME_TOKEN_CHARS)


# Browser audio -> upstream ------------------------------------------------------------------


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into non-empty frames at arbitrary places (the reader refuses empty ones)."""
    cuts = draw(st.sets(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=12))
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@FEW
@given(st.data(), st.binary(max_size=2048))
def test_browser_audio_reaches_upstream_in_order_less_at_most_one_odd_byte(
    data: st.DataObject, pcm: bytes
) -> None:
    aligner = AudioAligner()
    received, sent = b"", b""
    for frame in data.draw(split(pcm)):
        received += frame
        chunk = aligner.align(frame)
        if chunk:  # the reader sends nothing for an empty one
            message = orjson.loads(audio_to_upstream(chunk))
            audio = message["realtimeInput"]["audio"]
            assert message == {"realtimeInput": {"audio": audio}}
            assert audio["mimeType"] == BROWSER_AUDIO_MIME
            sent += base64.b64decode(audio["data"], validate=True)
        # Everything received so far is sent but for an odd byte, which waits.
        assert sent == received[: len(received) // 2 * 2]
    assert sent == pcm[: len(pcm) // 2 * 2]


# Upstream -> browser --------------------------------------------------------------------------

ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "standard": lambda pcm: base64.b64encode(pcm).decode(),
    "standard unpadded": lambda pcm: base64.b64encode(pcm).decode().rstrip("="),
    "URL-safe": lambda pcm: base64.urlsafe_b64encode(pcm).decode(),
    "URL-safe unpadded": lambda pcm: base64.urlsafe_b64encode(pcm).decode().rstrip("="),
}
even_pcm = st.binary(max_size=512).map(lambda pcm: pcm[: len(pcm) // 2 * 2])
#: A model-turn part: ("audio", pcm, encoding) or ("text", text, "").
parts = st.tuples(
    st.just("audio"), even_pcm | st.binary(max_size=64), st.sampled_from(sorted(ENCODINGS))
)
parts |= st.tuples(st.just("text"), st.text(max_size=10), st.just(""))


def audio_part(pcm: bytes, encoding: str) -> dict[str, Any]:
    data = ENCODINGS[encoding](pcm)
    return {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}


def _turn(drawn: list[tuple[str, Any, str]]) -> dict[str, Any]:
    turn_parts = [
        audio_part(value, encoding) if kind == "audio" else {"text": value}
        for kind, value, encoding in drawn
    ]
    return {"parts": turn_parts}


@FEW
@given(st.lists(st.lists(parts, min_size=1, max_size=4), min_size=1, max_size=5))
def test_upstream_audio_parts_reach_the_browser_as_binary_in_order(
    messages: list[list[tuple[str, Any, str]]],
) -> None:
    aligner = AudioAligner()
    audio_in, audio_out = b"", b""
    for message in messages:
        event = translate_upstream(
            orjson.dumps({"serverContent": {"modelTurn": _turn(message)}}), aligner
        )
        audio_in += b"".join(value for kind, value, _ in message if kind == "audio")
        binary = [f for f in event.frames if isinstance(f, bytes)]
        assert all(len(f) and len(f) % 2 == 0 for f in binary)
        audio_out += b"".join(binary)
        # The text parts, and only they, stay JSON: one frame after the audio.
        texts = [{"text": value} for kind, value, _ in message if kind == "text"]
        json_frames = [f for f in event.frames if isinstance(f, str)]
        rest = {"serverContent": {"modelTurn": {"parts": texts}}}
        assert json_frames == ([orjson.dumps(rest).decode()] if texts else [])
        assert event.frames == binary + json_frames
        assert event.generating
    assert audio_out == audio_in[: len(audio_in) // 2 * 2]  # all of it when its length is even


UPSTREAM_KEYS = st.sampled_from(
    [
        "serverContent",
        "modelTurn",
        "parts",
        "inlineData",
        "mimeType",
        "data",
        "text",
        "turnComplete",
        "interrupted",
        "toolCall",
        "goAway",
        "timeLeft",
        "sessionResumptionUpdate",
        "newHandle",
        "resumable",
        "lastConsumedClientMessageIndex",
        "usageMetadata",
        "setupComplete",
    ]
) | st.text(max_size=6)
UPSTREAM_SCALARS = JSON_SCALARS | st.sampled_from(
    ["audio/pcm;rate=24000", "audio/", "AQI=", "AQID", "_9g", "!!!", "50s", "12", "-1", "1e3"]
)
upstream_values = json_values(UPSTREAM_KEYS, UPSTREAM_SCALARS)


usage = st.fixed_dictionaries({}, optional={"totalTokenCount": st.integers(0, 99)})
message_index = st.integers(-1, 2**64 - 1) | st.integers(0, 99).map(str)
message_index |= st.sampled_from(["-1", "1.5", "99999999999999999999", ""])
#: Server messages as Gemini sends them, by kind, with the fields the proxy reads.
SERVER_MESSAGES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "model turn": st.fixed_dictionaries(
        {
            "serverContent": st.fixed_dictionaries(
                {"modelTurn": st.lists(parts, min_size=1, max_size=4).map(_turn)},
                optional={
                    "turnComplete": st.booleans(),
                    "interrupted": st.booleans(),
                    "outputTranscription": st.fixed_dictionaries({"text": st.text(max_size=4)}),
                },
            )
        },
        optional={"usageMetadata": usage},
    ),
    "turn complete": st.fixed_dictionaries(
        {"serverContent": st.fixed_dictionaries({"turnComplete": st.booleans()})},
        optional={"usageMetadata": usage},
    ),
    "tool call": st.fixed_dictionaries(
        {"toolCall": st.fixed_dictionaries({"functionCalls": st.lists(usage, max_size=2)})},
        optional={"usageMetadata": usage},
    ),
    "go away": st.fixed_dictionaries(
        {"goAway": st.fixed_dictionaries({}, optional={"timeLeft": st.sampled_from(["9s"])})}
    ),
    "resumption update": st.fixed_dictionaries(
        {
            "sessionResumptionUpdate": st.fixed_dictionaries(
                {"newHandle": st.text(max_size=4), "resumable": st.booleans()},
                optional={"lastConsumedClientMessageIndex": message_index},
            )
        }
    ),
    "setup complete": st.just({"setupComplete": {}}),
    "usage": st.fixed_dictionaries({"usageMetadata": usage}),
}


def _slots(value: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``value``, at any depth."""
    found: list[tuple[Any, Any]] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        for key in list(item) if isinstance(item, dict) else range(len(item)):
            found.append((item, key))
            if isinstance(item[key], dict | list):
                pending.append(item[key])
    return found


@st.composite
def mutated(draw: st.DrawFn, messages: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A message from ``messages`` with up to two values, anywhere in it, replaced by any JSON
    value or removed."""
    message = copy.deepcopy(draw(messages))  # st.just gives the same object each time
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        slots = _slots(message)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        if draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(upstream_values)
    return message


@pytest.mark.parametrize("kind", [*SERVER_MESSAGES, "any object"])
@settings(FEW, max_examples=30)
@given(data=st.data(), as_bytes=st.booleans())
def test_any_upstream_object_translates_or_is_a_decode_error(
    kind: str, data: st.DataObject, as_bytes: bool
) -> None:
    """Each kind of server message, as sent or with values anywhere in it broken, and any
    object at all."""
    if kind == "any object":
        objects = st.dictionaries(UPSTREAM_KEYS, upstream_values, max_size=5)
    else:
        objects = mutated(SERVER_MESSAGES[kind])
    message = data.draw(objects)
    raw = orjson.dumps(message)
    try:
        event = translate_upstream(raw if as_bytes else raw.decode(), AudioAligner())
        if event.tool_call is not None:
            with_session_stats(event.tool_call, {"messageCount": 1})
    except UpstreamDecodeError:
        return
    for frame in event.frames:
        if isinstance(frame, bytes):
            assert frame
            assert len(frame) % 2 == 0
        else:
            assert isinstance(orjson.loads(frame), dict)


@FEW
@given(st.binary(max_size=64) | upstream_values.map(orjson.dumps))
def test_any_upstream_frame_that_is_not_an_object_is_a_decode_error(raw: bytes) -> None:
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        message = None
    if isinstance(message, dict):
        return  # the property above
    with pytest.raises(UpstreamDecodeError):
        translate_upstream(raw, AudioAligner())


def test_a_message_nested_deeper_than_orjson_writes_is_a_decode_error() -> None:
    """Audio taken out, the rest is written again: orjson stops at 254 levels (reads 1024)."""
    deep = '{"k":' * 300 + "1" + "}" * 300
    audio = '{"inlineData":{"mimeType":"audio/pcm","data":"AQI="}}'
    raw = '{"serverContent":{"modelTurn":{"parts":[' + audio + ']}},"x":' + deep + "}"
    with pytest.raises(UpstreamDecodeError, match="nested too deep"):
        translate_upstream(raw, AudioAligner())
    call = translate_upstream('{"toolCall":' + deep + "}", AudioAligner()).tool_call
    assert call is not None
    with pytest.raises(UpstreamDecodeError, match="nested too deep"):
        with_session_stats(call, {})
