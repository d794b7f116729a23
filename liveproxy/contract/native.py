"""The Gemini-native endpoint's contract: an ephemeral token's constraints, their locks applied
to a client's setup, and how a native session's socket is closed.

A client of the native endpoint speaks Gemini's own protocol (Google's SDKs pointed at
liveproxy's base URL), with a token minted by ``POST /api/auth {"ephemeral": {...}}``. The
token's constraints are stored with it (:attr:`liveproxy.store.Grant.ephemeral`, JSON text
written by :func:`constraints_text`) and applied to the client's setup here, before the
server's own rules (:func:`~liveproxy.contract.session_setup.browser_setup`) apply to the
result.

The locks follow Google's ``auth_tokens.create`` as its Python SDK sends it:

- no ``config``: the client's setup is used as it is;
- ``config`` and ``lock_additional_fields`` unset (None): the token's config *is* the setup;
  the client's setup is ignored;
- ``lock_additional_fields: []``: the fields set in the token's config win (each top-level
  field, or for an object such as ``generationConfig`` each of its fields); the client's
  other fields stay;
- ``lock_additional_fields: [names]``: as ``[]``, and the named fields are locked too (a
  ``GenerationConfig`` field's bare name means ``generationConfig.<name>``): the token's value
  wins, or the client's is removed when the token sets none.

The token's ``model``, when set, wins over the setup's in every case. The server's model rules
then apply as for any setup (a model outside ``MODEL``/``ALLOWED_MODELS`` is replaced by the
server's; minting refuses a token naming one).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from liveproxy.contract.codec import MAX_RESUME_TOKEN_CHARS
from liveproxy.contract.endings import Outcome
from liveproxy.contract.errors import (
    InvalidSetup,
    MessageTooBig,
    RateLimited,
    SessionError,
    SlowClient,
)
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.contract.session_setup import (
    TRANSCRIPTION_FLAGS,
    SetupPolicy,
    allows_model,
    object_shortcut_expanded,
)
from liveproxy.protocol import closes
from liveproxy.protocol.casing import to_camel
from liveproxy.protocol.gemini_messages import SETUP
from liveproxy.protocol.locks import apply_paths, field_mask_paths, two_levels_camel
from liveproxy.protocol.schema import SchemaError, normalise

#: Google's reason for a token that is missing its form, unknown, spent or expired.
MALFORMED_TOKEN: Final = "Missing or malformed auth token"
#: A handle that names no conversation (see :func:`asked_resumption`).
UNKNOWN_HANDLE: Final = "\x00unknown"


def asked_resumption(first: bytes | str) -> tuple[bool, str | None]:
    """Whether a native client's first message (its setup, unchecked) asks for session
    resumption, and the handle it resumes (None: a new session).

    ``setup.sessionResumption`` (either casing) is an object; its ``handle``, when a non-empty
    string, is the handle (empty or absent: a new session, as Google takes it). A handle that is
    not a string of at most 256 characters can name no conversation: it comes back as
    :data:`UNKNOWN_HANDLE`. Anything that is not such a setup asks for nothing (the setup's own
    validation then refuses it).
    """
    try:
        data = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False, None
    setup = data.get("setup") if isinstance(data, dict) else None
    if not isinstance(setup, dict):
        return False, None
    asked = setup.get("sessionResumption", setup.get("session_resumption"))
    if not isinstance(asked, dict):
        return False, None
    handle = asked.get("handle")
    if handle is None or handle == "":
        return True, None
    if not isinstance(handle, str) or len(handle) > MAX_RESUME_TOKEN_CHARS:
        return True, UNKNOWN_HANDLE
    return True, handle


def resumption_update(handle: str) -> str:
    """``{"sessionResumptionUpdate": {"newHandle", "resumable": true}}``, as Gemini sends it,
    with a liveproxy handle."""
    return orjson.dumps(
        {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}}
    ).decode()


class InvalidMessage(SessionError):
    """A native client's message Gemini would refuse: Gemini closes the socket (1007) where
    the browser protocol answers ``bad_message`` and goes on."""

    code = "invalid_message"
    close_code = closes.INVALID_PAYLOAD


def constraints_text(request: EphemeralRequest) -> str:
    """The constraints kept with the token (JSON text; ``expire_seconds`` is the grant's)."""
    return orjson.dumps(
        {
            "model": request.model,
            "config": request.config,
            "lock_additional_fields": request.lock_additional_fields,
            "uses": request.uses,
        }
    ).decode()


def read_constraints(text: str) -> EphemeralRequest:
    """The constraints :func:`constraints_text` wrote.

    Raises:
        ValueError: the text is not such constraints.
    """
    data = orjson.loads(text)
    if not isinstance(data, dict):
        raise ValueError("ephemeral constraints must be a JSON object")
    model, config, locked = (
        data.get("model"),
        data.get("config"),
        data.get("lock_additional_fields"),
    )
    if not (model is None or isinstance(model, str)) or not (
        config is None or isinstance(config, dict)
    ):
        raise ValueError("malformed ephemeral constraints")
    if locked is not None and not (
        isinstance(locked, list) and all(isinstance(f, str) for f in locked)
    ):
        raise ValueError("malformed ephemeral constraints")
    return EphemeralRequest(
        model=model,
        config=config,
        lock_additional_fields=None if locked is None else tuple(locked),
        uses=int(data.get("uses", 1)),
    )


def check_constraints(request: EphemeralRequest, policy: SetupPolicy) -> str | None:
    """Why a token with these constraints cannot be minted (a message for a 400), or None: a
    model the server does not serve, or a config that is not a Gemini setup."""
    model = request.model
    if model is not None and not (
        model.removeprefix("models/") == policy.model.removeprefix("models/")
        or allows_model(model, policy)
    ):
        return f"ephemeral.model {model!r} is not one this server serves"
    if request.config is not None:
        try:
            normalise(SETUP, _setup_shortcuts_removed(request.config), "setup")
        except SchemaError as exc:
            return f"ephemeral.config: {exc.reason}"
    return None


def _setup_shortcuts_removed(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the browser shortcuts :func:`browser_setup` expands (so the schema
    check accepts what a setup may say): transcription flags, one tool object, a plain-text
    system instruction."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = to_camel(key)
        if name in TRANSCRIPTION_FLAGS and isinstance(value, bool):
            continue
        out[key] = object_shortcut_expanded(name, value)
    return out


def constrained_setup(client: Any, constraints: EphemeralRequest) -> Any:
    """The client's ``setup`` object with the token's constraints applied (see the module's
    docstring); anything but an object comes back as it is, for the setup's validation to
    refuse."""
    if not isinstance(client, dict):
        return client
    setup = two_levels_camel(client)
    config = constraints.config
    if config is not None:
        token = two_levels_camel(config)
        locked = constraints.lock_additional_fields
        if locked is None:
            setup = dict(token)
        else:
            apply_paths(setup, token, field_mask_paths(token, locked))
    if constraints.model is not None:
        setup["model"] = constraints.model
    return setup


def native_close(outcome: Outcome) -> tuple[int, str]:
    """The close code and reason a native client gets at the end of its session: no
    ``sessionEnd`` or ``error`` event (Gemini sends none), only a close frame, as Google would
    send it.

    A normal ending closes with 1000 (1001 on the server's shutdown); a refused setup or
    message 1007 with its reason; a message over the size limit 1009; a client too fast or too
    slow to read 1008; anything upstream or internal 1011 with the reason.
    """
    if not isinstance(outcome, SessionError):
        return outcome.close_code, "" if outcome.reason == "browser_closed" else outcome.reason
    if isinstance(outcome, InvalidSetup | InvalidMessage):
        return closes.INVALID_PAYLOAD, outcome.message
    if isinstance(outcome, MessageTooBig):
        return closes.TOO_BIG, outcome.message
    if isinstance(outcome, RateLimited | SlowClient):
        return closes.POLICY, outcome.message
    return closes.INTERNAL, outcome.message
