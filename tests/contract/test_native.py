"""An ephemeral token's constraints: parsed with their bounds, kept as text, applied to a client's
setup with Google's locks, and how a native session's socket closes."""

from __future__ import annotations

from typing import Any

import pytest

from liveproxy.contract.codec import DecodeError, decode_auth_request
from liveproxy.contract.endings import BROWSER_CLOSED, ENDED_BY_OPERATOR, SHUTDOWN, TIME_LIMIT
from liveproxy.contract.errors import InvalidSetup, SlowClient, UpstreamFailed
from liveproxy.contract.native import (
    UNKNOWN_HANDLE,
    InvalidMessage,
    asked_resumption,
    check_constraints,
    constrained_setup,
    constraints_text,
    native_close,
    read_constraints,
    resumption_update,
)
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.contract.session_setup import SetupPolicy

CLIENT: dict[str, Any] = {
    "model": "models/client-model",
    "generation_config": {"response_modalities": ["TEXT"], "temperature": 0.9},
    "system_instruction": {"parts": [{"text": "client"}]},
}
TOKEN_CONFIG: dict[str, Any] = {"generationConfig": {"temperature": 0.2}, "tools": []}


def test_an_ephemeral_body_is_parsed_in_either_casing() -> None:
    body = b'{"ephemeral": {"model": "m", "lockAdditionalFields": ["temperature"],'
    body += b' "expireSeconds": 90}}'
    request = decode_auth_request(body).ephemeral
    assert request == EphemeralRequest(
        model="m", lock_additional_fields=("temperature",), uses=1, expire_seconds=90
    )
    assert decode_auth_request(b'{"ephemeral": {}}').ephemeral == EphemeralRequest()
    assert decode_auth_request(b"{}").ephemeral is None


@pytest.mark.parametrize("uses", [0, 1, 2, 1000])
def test_an_ephemeral_token_takes_uses_from_0_unlimited_to_1000(uses: int) -> None:
    body = b'{"ephemeral": {"uses": %d}}' % uses
    request = decode_auth_request(body).ephemeral
    assert request is not None
    assert request.uses == uses
    assert read_constraints(constraints_text(request)).uses == uses


@pytest.mark.parametrize(
    "body",
    [
        b'{"ephemeral": {"uses": -1}}',
        b'{"ephemeral": {"uses": 1001}}',
        b'{"ephemeral": {"uses": 2.5}}',
        b'{"ephemeral": {"uses": true}}',
        b'{"ephemeral": {"model": ""}}',
        b'{"ephemeral": {"lock_additional_fields": ["' + b"x" * 65 + b'"]}}',
        b'{"ephemeral": [], "resume": "r"}',
        b'{"ephemeral": {}, "resume": "r"}',
    ],
)
def test_an_ephemeral_body_out_of_bounds_is_refused(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_auth_request(body)


def test_constraints_survive_the_store_as_text() -> None:
    request = EphemeralRequest(model="m", config=TOKEN_CONFIG, lock_additional_fields=())
    assert read_constraints(constraints_text(request)) == request
    with pytest.raises(ValueError, match="malformed"):
        read_constraints('{"model": 5}')


def test_minting_checks_the_model_and_the_config() -> None:
    policy = SetupPolicy("served", frozenset({"also-served"}))
    assert check_constraints(EphemeralRequest(model="models/served"), policy) is None
    assert check_constraints(EphemeralRequest(model="also-served"), policy) is None
    assert "not one this server serves" in str(
        check_constraints(EphemeralRequest(model="other"), policy)
    )
    assert check_constraints(EphemeralRequest(config={"system_instruction": "hi"}), policy) is None
    assert "Unknown name" in str(
        check_constraints(EphemeralRequest(config={"speechConfig": {}}), policy)
    )


def test_no_config_leaves_the_clients_setup_and_the_tokens_model_wins() -> None:
    setup = constrained_setup(CLIENT, EphemeralRequest(model="token-model"))
    assert setup["model"] == "token-model"
    assert setup["generationConfig"] == {"responseModalities": ["TEXT"], "temperature": 0.9}
    assert constrained_setup(CLIENT, EphemeralRequest())["model"] == "models/client-model"


def test_a_config_without_lock_additional_fields_is_the_whole_setup() -> None:
    setup = constrained_setup(CLIENT, EphemeralRequest(config=TOKEN_CONFIG))
    assert setup == {"generationConfig": {"temperature": 0.2}, "tools": []}


def test_an_empty_lock_list_locks_the_fields_the_token_sets() -> None:
    setup = constrained_setup(
        CLIENT, EphemeralRequest(config=TOKEN_CONFIG, lock_additional_fields=())
    )
    assert setup == {
        "model": "models/client-model",
        "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.2},
        "systemInstruction": {"parts": [{"text": "client"}]},
        "tools": [],
    }


def test_named_locks_take_the_tokens_value_or_remove_the_clients() -> None:
    request = EphemeralRequest(
        config=TOKEN_CONFIG, lock_additional_fields=("response_modalities", "systemInstruction")
    )
    setup = constrained_setup(CLIENT, request)
    assert setup == {
        "model": "models/client-model",
        "generationConfig": {"temperature": 0.2},
        "tools": [],
    }


def test_a_setup_that_is_not_an_object_is_left_for_validation_to_refuse() -> None:
    assert constrained_setup("nope", EphemeralRequest(model="m")) == "nope"


def test_native_sessions_end_with_a_close_frame_as_google_would() -> None:
    assert native_close(BROWSER_CLOSED) == (1000, "")
    assert native_close(TIME_LIMIT) == (1000, "time_limit")
    assert native_close(SHUTDOWN) == (1001, "shutdown")
    assert native_close(ENDED_BY_OPERATOR) == (1000, "ended_by_operator")
    assert native_close(InvalidSetup("bad")) == (1007, "bad")
    assert native_close(InvalidMessage("bad")) == (1007, "bad")
    assert native_close(SlowClient("slow")) == (1008, "slow")
    assert native_close(UpstreamFailed("gone")) == (1011, "gone")


@pytest.mark.parametrize(
    ("first", "asked"),
    [
        ('{"setup": {"sessionResumption": {}}}', (True, None)),
        ('{"setup": {"session_resumption": {"handle": ""}}}', (True, None)),
        ('{"setup": {"sessionResumption": {"handle": "h-1"}}}', (True, "h-1")),
        (b'{"setup": {"session_resumption": {"handle": "h-2"}}}', (True, "h-2")),
        ('{"setup": {"sessionResumption": {"handle": 5}}}', (True, UNKNOWN_HANDLE)),
        (
            '{"setup": {"sessionResumption": {"handle": "' + "h" * 257 + '"}}}',
            (True, UNKNOWN_HANDLE),
        ),
        ('{"setup": {"sessionResumption": "yes"}}', (False, None)),
        ('{"setup": {"model": "m"}}', (False, None)),
        ('{"setup": []}', (False, None)),
        ('{"realtimeInput": {}}', (False, None)),
        ("[1]", (False, None)),
        ("not json", (False, None)),
    ],
)
def test_a_first_message_asks_for_resumption_and_names_its_handle(
    first: str | bytes, asked: tuple[bool, str | None]
) -> None:
    assert asked_resumption(first) == asked


def test_a_handle_is_announced_as_gemini_announces_one() -> None:
    assert resumption_update("lp-handle") == (
        '{"sessionResumptionUpdate":{"newHandle":"lp-handle","resumable":true}}'
    )
