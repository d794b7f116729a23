"""Properties of the Gemini schema validator: casing, idempotence, Struct payloads, refusals.

Setups are drawn from the schema itself: any subset of the fields of
:data:`~liveproxy.protocol.gemini_messages.SETUP` (at every level), each with a valid value.
"""

from __future__ import annotations

import base64
import copy
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveproxy.protocol.casing import to_camel, to_snake
from liveproxy.protocol.gemini_messages import CLIENT_MESSAGE, SETUP, parse_client_message
from liveproxy.protocol.schema import (
    Enum,
    Field,
    Message,
    Scalar,
    SchemaError,
    normalise,
    shown,
)

#: Few examples per property: these run with every ``make test``, on a fixed seed.
FEW = settings(max_examples=60, deadline=None, database=None, derandomize=True)

#: Keys of free-form (``Struct``) payloads: user data, never renamed, so often snake_case here.
STRUCT_KEYS = st.sampled_from(
    ["type", "properties", "location_name", "snake_key", "camelKey", "a_b_c", "_x", "x_", "é_ü"]
) | st.text(max_size=8)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(STRUCT_KEYS, children, max_size=3)
    ),
    max_leaves=6,
)
structs = st.dictionaries(STRUCT_KEYS, json_values, max_size=3)


def _integers(bits: int) -> st.SearchStrategy[int | str]:
    ints = st.integers(min_value=-(2 ** (bits - 1)), max_value=2 ** (bits - 1) - 1)
    return ints | ints.map(str)  # proto3 JSON takes an integer as a number or a string


def _base64(data: bytes, alphabet: str, padded: bool) -> str:
    text = (base64.urlsafe_b64encode if alphabet == "url" else base64.b64encode)(data).decode()
    return text if padded else text.rstrip("=")


SCALARS: dict[Scalar, st.SearchStrategy[Any]] = {
    Scalar.STRING: st.text(max_size=8),
    Scalar.INT32: _integers(32),
    Scalar.INT64: _integers(64),
    Scalar.FLOAT: st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000),
    Scalar.BOOL: st.booleans(),
    Scalar.BYTES: st.builds(
        _base64, st.binary(max_size=9), st.sampled_from(["std", "url"]), st.booleans()
    ),
    Scalar.DURATION: st.builds(
        "{}s".format, st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False)
    ),
    Scalar.STRUCT: structs,
    Scalar.VALUE: json_values,
}


def _single(type_: Scalar | Enum | Message) -> st.SearchStrategy[Any]:
    if isinstance(type_, Message):
        return valid(type_)
    if isinstance(type_, Enum):
        names = st.sampled_from(sorted(type_.values)) if type_.values else st.text(max_size=8)
        return names | st.integers(0, 3)  # an enum is a name or its number
    return SCALARS[type_]


def _field(field: Field) -> st.SearchStrategy[Any]:
    return st.lists(_single(field.type), max_size=2) if field.repeated else _single(field.type)


@st.composite
def valid(draw: st.DrawFn, message: Message) -> dict[str, Any]:
    """A few of ``message``'s fields, in any order, each with a valid value, in camelCase."""
    fields = message.fields
    names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=4))
    return {name: draw(_field(fields[name])) for name in names}


def spelled(message: Message, value: dict[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    """``value`` with its field names spelled by ``name``, at every level but inside Structs;
    keys that are not fields of ``message`` are kept as they are."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = message.fields.get(key)
        if field is not None and isinstance(field.type, Message):
            body = field.type
            if field.repeated:
                item = [spelled(body, x, name) for x in item]
            else:
                item = spelled(body, item, name)
        out[name(key) if field is not None else key] = item
    return out


def _mixed(rnd: random.Random) -> Callable[[str], str]:
    return lambda key: to_snake(key) if rnd.random() < 0.5 else key


@FEW
@given(valid(SETUP), st.randoms(use_true_random=False))
def test_a_setup_normalises_alike_in_either_casing_and_normalising_again_changes_nothing(
    setup: dict[str, Any], rnd: random.Random
) -> None:
    camel = normalise(SETUP, setup, "setup")
    assert camel == setup  # drawn in camelCase, every value valid: given back as it was
    assert normalise(SETUP, spelled(SETUP, setup, to_snake), "setup") == camel
    assert normalise(SETUP, spelled(SETUP, setup, _mixed(rnd)), "setup") == camel
    assert normalise(SETUP, camel, "setup") == camel
    # As the first client message, in snake_case, the same.
    assert parse_client_message({"setup": spelled(SETUP, setup, to_snake)}) == ("setup", camel)


def _message_types() -> list[Message]:
    """Every message type a client message may hold, at any level."""
    seen: list[Message] = []
    pending = [CLIENT_MESSAGE]
    while pending:
        message = pending.pop()
        seen.append(message)
        for field in message.fields.values():
            if isinstance(field.type, Message) and field.type not in seen + pending:
                pending.append(field.type)
    return seen


def test_every_field_name_survives_snake_case_and_back() -> None:
    """What the properties rely on: ``to_camel(to_snake(name)) == name`` for every field."""
    messages = _message_types()
    assert len(messages) > 30
    for message in messages:
        for name in message.fields:
            assert to_camel(to_snake(name)) == name


function_declarations = st.fixed_dictionaries(
    {"name": st.text(max_size=8), "parameters": structs, "response": structs}
)


@FEW
@given(
    st.lists(function_declarations, min_size=1, max_size=2),
    st.lists(structs, min_size=1, max_size=2),
    structs,
    st.sampled_from([to_snake, to_camel]),
)
def test_struct_payloads_keep_their_keys_exactly(
    declarations: list[dict[str, Any]],
    responses: list[dict[str, Any]],
    args: dict[str, Any],
    name: Callable[[str], str],
) -> None:
    setup = {"tools": [{"functionDeclarations": declarations}]}
    _, body = parse_client_message({name("setup"): spelled(SETUP, setup, name)})
    normalised = body["tools"][0]["functionDeclarations"]
    for got, sent in zip(normalised, declarations, strict=True):
        for key in ("parameters", "response"):
            assert got[key] == sent[key]
            assert list(got[key]) == list(sent[key])  # the same keys, in the same order

    answers = [{"id": str(i), "response": r} for i, r in enumerate(responses)]
    _, body = parse_client_message({name("toolResponse"): {name("functionResponses"): answers}})
    assert [answer["response"] for answer in body["functionResponses"]] == responses

    turn = {"parts": [{name("functionCall"): {"name": "f", "args": args}}]}
    _, body = parse_client_message({name("clientContent"): {"turns": [turn]}})
    assert body["turns"][0]["parts"][0]["functionCall"]["args"] == args


def _nodes(
    message: Message, value: dict[str, Any], path: str
) -> list[tuple[dict[str, Any], Message, str]]:
    """Every message object in ``value`` (camelCase), with its type and its path as Google's
    reasons write it."""
    found = [(value, message, path)]
    for key, item in value.items():
        field = message.fields[key]
        child = f"{path}.{to_snake(key)}"
        if isinstance(field.type, Message):
            if field.repeated:
                for i, x in enumerate(item):
                    found += _nodes(field.type, x, f"{child}[{i}]")
            else:
                found += _nodes(field.type, item, child)
    return found


#: Unknown names to try: fields of other messages (the usual mistake), and anything at all.
CANDIDATE_NAMES = st.sampled_from(
    sorted({spelling for m in _message_types() for n in m.fields for spelling in (n, to_snake(n))})
) | st.text(max_size=70)


@FEW
@given(st.data(), valid(SETUP), st.randoms(use_true_random=False), json_values)
def test_an_unknown_field_anywhere_is_refused_by_name(
    data: st.DataObject, setup: dict[str, Any], rnd: random.Random, value: Any
) -> None:
    setup = copy.deepcopy(setup)
    node, message, path = data.draw(st.sampled_from(_nodes(SETUP, setup, "setup")))
    key = data.draw(CANDIDATE_NAMES.filter(lambda k: to_camel(k) not in message.fields))
    node[key] = value
    refused = spelled(SETUP, setup, _mixed(rnd))
    with pytest.raises(SchemaError) as refusal:
        normalise(SETUP, refused, "setup")
    assert refusal.value.reason == (
        f"Invalid JSON payload received. Unknown name \"{shown(key)}\" at '{path}': "
        "Cannot find field."
    )
