"""Google's ephemeral tokens (``POST /v1alpha/auth_tokens``), as the emulator mints and
admits them: the request's fields, the book of minted tokens, and their rules.

The request, as the Python SDK's ``auth_tokens.create`` sends it (all fields optional):
``expireTime`` (default now + 30 min), ``newSessionExpireTime`` (default now + 60 s), both
RFC 3339 with a zone and at most 20 h ahead; ``uses`` (default 1, 0: unlimited);
``bidiGenerateContentSetup`` (a setup object) and ``fieldMask`` (comma-separated paths). Google
answers ``{"name": "auth_tokens/<opaque>"}``: the other fields are input only.

A token opens ``BidiGenerateContentConstrained`` only: a new session before
``newSessionExpireTime`` while it has uses left (each new session spends one), a resumption
(a setup with a handle, which spends none) before ``expireTime``; a session ends when
``expireTime`` passes. Otherwise the connection closes 1007 "Missing or malformed auth token".

The locks, as Google documents them: with no ``fieldMask`` the token's setup is the session's
(the client's ``model`` and ``sessionResumption`` are kept when the token sets none: a session
needs a model, and resuming is the client's own); with a ``fieldMask`` each path takes the
token's value (or is removed when the token sets none) and the client's other fields stay.

Times are wall-clock seconds (``time.time()`` scale) from the caller's clock. Pure and
synchronous; the book holds at most :data:`MAX_TOKENS` unexpired tokens.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import orjson

from liveproxy.emulator.endings import Close
from liveproxy.protocol.casing import to_camel
from liveproxy.protocol.closes import INVALID_PAYLOAD
from liveproxy.protocol.gemini_messages import SETUP
from liveproxy.protocol.locks import apply_paths, two_levels_camel
from liveproxy.protocol.schema import SchemaError, normalise

TOKEN_PREFIX: Final = "auth_tokens/"
#: Google's reason for a token it does not know, or one expired or spent.
TOKEN_INVALID: Final = "Missing or malformed auth token"
DEFAULT_EXPIRE_SECONDS: Final = 30 * 60.0
DEFAULT_NEW_SESSION_SECONDS: Final = 60.0
#: How far ahead either time may be.
MAX_AHEAD_SECONDS: Final = 20 * 3600.0
#: Unexpired tokens kept; minting more is refused (429) until some expire.
MAX_TOKENS: Final = 10_000
#: The most paths a ``fieldMask`` may list.
MAX_PATHS: Final = 64
FIELDS: Final = frozenset(
    {"expireTime", "newSessionExpireTime", "uses", "bidiGenerateContentSetup", "fieldMask"}
)
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?P<fraction>\.\d{1,9})?(?P<zone>Z|[+-]\d\d:\d\d)",
    re.IGNORECASE,
)


class BadTokenRequest(Exception):
    """The request is not one Google accepts (400 ``INVALID_ARGUMENT`` with this message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class TokenRequest:
    """A parsed ``auth_tokens.create`` request, with its defaults applied."""

    expire_at: float
    new_session_until: float
    uses: int
    #: The setup the token locks (two levels camelCase), or None.
    setup: dict[str, Any] | None = None
    #: None: no ``fieldMask`` (the whole setup is locked).
    field_mask: tuple[str, ...] | None = None


@attrs.define(eq=False)
class Token:
    """A minted token and what it has been used for."""

    name: str
    request: TokenRequest
    #: New sessions it has opened (resumptions are not counted).
    used: int = 0

    def locked(self, client: dict[str, Any]) -> dict[str, Any]:
        """The client's setup with the token's locks applied (see the module's docstring)."""
        token = self.request.setup
        if token is None:
            return client
        setup = two_levels_camel(client)
        if self.request.field_mask is None:
            kept: dict[str, Any] = {
                k: setup[k] for k in ("model", "sessionResumption") if k in setup
            }
            return {**kept, **token}
        apply_paths(setup, token, self.request.field_mask)
        return setup


def read_token_request(body: bytes, now: float) -> TokenRequest:
    """Parse an ``auth_tokens.create`` body (JSON, camelCase or snake_case names).

    Raises:
        BadTokenRequest: not a JSON object, an unknown field, or a field out of its bounds.
    """
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise BadTokenRequest("Invalid JSON payload received.") from None
    if not isinstance(data, dict):
        raise BadTokenRequest("Invalid JSON payload received. Expected an object.")
    fields = {to_camel(str(key)): value for key, value in data.items()}
    for name in fields:
        if name not in FIELDS:
            raise BadTokenRequest(
                f'Invalid JSON payload received. Unknown name "{name[:64]}": Cannot find field.'
            )
    expire_at = _time(fields, "expireTime", now, DEFAULT_EXPIRE_SECONDS)
    new_session_until = _time(fields, "newSessionExpireTime", now, DEFAULT_NEW_SESSION_SECONDS)
    uses = fields.get("uses", 1)
    if isinstance(uses, str) and uses.isdigit():  # proto3 JSON may spell an int as a string
        uses = int(uses)
    if not isinstance(uses, int) or isinstance(uses, bool) or not 0 <= uses < 2**31:
        raise BadTokenRequest("Invalid value at 'uses' (TYPE_INT32)")
    setup = fields.get("bidiGenerateContentSetup")
    if setup is not None:
        if not isinstance(setup, dict):
            raise BadTokenRequest(
                "Invalid value at 'bidi_generate_content_setup': expected an object"
            )
        try:
            setup = normalise(SETUP, setup, "bidi_generate_content_setup")
        except SchemaError as exc:
            raise BadTokenRequest(exc.reason) from None
    return TokenRequest(expire_at, new_session_until, uses, setup, _mask(fields.get("fieldMask")))


def _time(fields: dict[str, Any], name: str, now: float, default: float) -> float:
    value = fields.get(name)
    if value is None:
        return now + default
    moment = parse_rfc3339(value)
    if moment is None:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise BadTokenRequest(
            f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Timestamp), {shown!r}"
        )
    if moment > now + MAX_AHEAD_SECONDS:
        raise BadTokenRequest(f"{name} must be less than 20 hours in the future.")
    return moment


def parse_rfc3339(value: object) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp with a zone, or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    found = _RFC3339.fullmatch(value)
    if found is None:
        return None
    fraction = found["fraction"] or ""
    text = value[: found.start("fraction")] if fraction else value[: found.start("zone")]
    zone = found["zone"].upper()
    try:
        moment = datetime.fromisoformat(text + fraction[:7] + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp()


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch as RFC 3339 in UTC (whole seconds, ``Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mask(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list):  # a FieldMask's paths, if sent as a list
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise BadTokenRequest(
            "Invalid value at 'field_mask' (type.googleapis.com/google.protobuf.FieldMask)"
        )
    paths = tuple(p.strip() for p in value.split(",") if p.strip())
    if len(paths) > MAX_PATHS or any(len(p) > 128 for p in paths):
        raise BadTokenRequest("Invalid value at 'field_mask': too many or too long paths")
    return paths


class TokenBook:
    """The tokens one emulator has minted (unexpired ones; at most ``limit``)."""

    def __init__(self, limit: int = MAX_TOKENS) -> None:
        self._limit = limit
        self._tokens: dict[str, Token] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, name: object) -> bool:
        return name in self._tokens

    def get(self, name: str) -> Token | None:
        return self._tokens.get(name)

    def mint(self, request: TokenRequest, now: float) -> Token | None:
        """A new token for ``request``, or None: the book is full of unexpired tokens."""
        if len(self._tokens) >= self._limit:
            self._prune(now)
            if len(self._tokens) >= self._limit:
                return None
        token = Token(TOKEN_PREFIX + secrets.token_hex(24), request)
        self._tokens[token.name] = token
        return token

    def admit(self, name: str, now: float, *, resuming: bool) -> Token:
        """The token ``name`` opening a session now (a new one spends a use).

        Raises:
            Close: 1007 "Missing or malformed auth token": unknown, past its
                ``newSessionExpireTime`` (a new session) or ``expireTime``, or spent.
        """
        token = self._tokens.get(name)
        if token is None or now >= token.request.expire_at:
            raise Close(INVALID_PAYLOAD, TOKEN_INVALID)
        if not resuming:
            uses = token.request.uses
            if now >= token.request.new_session_until or (uses and token.used >= uses):
                raise Close(INVALID_PAYLOAD, TOKEN_INVALID)
            token.used += 1
        return token

    def _prune(self, now: float) -> None:
        for name in [n for n, t in self._tokens.items() if now >= t.request.expire_at]:
            del self._tokens[name]
