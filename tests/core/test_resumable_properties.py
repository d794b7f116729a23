"""Properties of a conversation's stored state: it comes back as it was written, is not kept when
too large, and anything else read back is refused with ValueError."""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import attrs
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from liveproxy.core import resumable as resumable_module
from liveproxy.core.resumable import MAX_STATE_BYTES, Resumable
from liveproxy.core.stats import Totals
from liveproxy.core.usage import KINDS, MODALITIES, UsageTotals

#: Few examples per property: these run with every ``make test``, on a fixed seed.
FEW = settings(max_examples=80, deadline=None, database=None, derandomize=True)

#: Text with non-ASCII, emoji (4 bytes in UTF-8) and what JSON escapes, drawn often.
texts = st.text(st.characters(codec="utf-8") | st.sampled_from('é€中😀🎙️"\\\n\u2028'), max_size=12)
#: What a setup holds after orjson read it: integers within 64 bits, finite floats.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
counts = st.integers(min_value=0, max_value=2**63 - 1)
seconds = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def paddings(draw: st.DrawFn) -> tuple[str, ...]:
    """Nothing, or one replayed message that brings the state to about :data:`MAX_STATE_BYTES`
    (a little under or over), written in characters of 1 to 4 bytes."""
    if not draw(st.booleans()):
        return ()
    char = draw(st.sampled_from(["x", "é", "€", "😀"]))
    size = draw(st.integers(MAX_STATE_BYTES - 2000, MAX_STATE_BYTES + 1000))
    return (char * (size // len(char.encode())),)


small_states = st.builds(
    Resumable,
    conversation_id=texts,
    handle=st.none() | texts,
    setup=st.dictionaries(texts, json_values, max_size=4),
    remaining_seconds=seconds,
    elapsed_seconds=seconds,
    totals=st.builds(
        Totals,
        message_count=counts,
        audio_chunks_sent=counts,
        total_token_count=counts,
        prompt_token_count=counts,
        response_token_count=counts,
        reconnects=counts,
        usage=st.builds(
            UsageTotals,
            tokens=st.dictionaries(
                st.sampled_from([name for name, _, _ in KINDS]),
                st.dictionaries(st.sampled_from(sorted(MODALITIES)), counts, max_size=3),
                max_size=3,
            ),
            total_tokens=counts,
            audio_in_bytes=counts,
            audio_out_bytes=counts,
        ),
    ),
    replay=st.lists(texts, max_size=4).map(tuple),
)
#: Any state, some of them about :data:`MAX_STATE_BYTES` large.
states = st.tuples(small_states, paddings()).map(
    lambda drawn: attrs.evolve(drawn[0], replay=drawn[0].replay + drawn[1])
)


def whole_encoding(state: Resumable) -> str:
    """``state.to_json()`` with no size limit."""
    with mock.patch.object(resumable_module, "MAX_STATE_BYTES", math.inf):
        text = state.to_json()
    assert text is not None
    return text


@FEW
@given(states)
def test_a_state_comes_back_as_it_was_written_unless_it_is_too_large(state: Resumable) -> None:
    whole = whole_encoding(state)
    assert Resumable.from_json(whole) == state
    written = state.to_json()
    assert written == (whole if len(whole.encode()) <= MAX_STATE_BYTES else None)


@pytest.mark.parametrize("char", ["x", "😀"])
def test_the_limit_is_in_bytes_and_a_state_of_exactly_the_limit_is_kept(char: str) -> None:
    empty = Resumable(
        conversation_id="c",
        handle="h",
        setup={},
        remaining_seconds=1.0,
        elapsed_seconds=2.0,
        replay=("",),
    )
    room = MAX_STATE_BYTES - len(whole_encoding(empty).encode())
    width = len(char.encode())
    text = char * (room // width) + "x" * (room % width)
    fits = attrs.evolve(empty, replay=(text,))
    assert len(whole_encoding(fits).encode()) == MAX_STATE_BYTES
    assert len(text) <= room  # in characters, fewer when they are emoji
    assert fits.to_json() == whole_encoding(fits)
    over = attrs.evolve(empty, replay=(text + "x",))
    assert len(whole_encoding(over).encode()) == MAX_STATE_BYTES + 1
    assert over.to_json() is None


def test_a_state_kept_before_metering_comes_back_with_no_usage() -> None:
    state = Resumable(
        conversation_id="c", handle="h", setup={}, remaining_seconds=1.0, elapsed_seconds=2.0
    )
    fields = _state_dict(state)
    del fields["totals"]["usage"]
    assert Resumable.from_json(orjson.dumps(fields).decode()).totals.usage == UsageTotals()


def _state_dict(state: Resumable) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(whole_encoding(state))
    return decoded


@st.composite
def broken_states(draw: st.DrawFn) -> str:
    """A state's JSON with one field removed, replaced by any JSON value, or one key added."""
    fields = _state_dict(draw(small_states))
    key = draw(st.sampled_from(sorted(fields)))
    how = draw(st.sampled_from(["remove", "replace", "add"]))
    if how == "remove":
        del fields[key]
    elif how == "replace":
        fields[key] = draw(json_values)
    else:
        fields[draw(texts.filter(lambda k: k not in fields))] = draw(json_values)
    return orjson.dumps(fields).decode()


@FEW
@given(
    st.text(st.characters(exclude_categories=()))  # lone surrogates too
    | json_values.map(lambda v: orjson.dumps(v).decode())
    | broken_states()
)
@example("")
@example("null")
@example('{"conversation_id": "c"}')
@example('"' + "\\ud800" + '"')
def test_anything_else_read_back_is_a_value_error_or_a_state_that_round_trips(text: str) -> None:
    try:
        state = Resumable.from_json(text)
    except ValueError:
        return
    assert Resumable.from_json(whole_encoding(state)) == state
