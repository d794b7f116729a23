"""Credentials as Google reads them from the upgrade request, and whether they are accepted.

Sources, first match wins: ``Authorization: Bearer X`` (kind ``bearer``) or ``Authorization:
Token X`` (``token``), ``?access_token=X`` (``access_token``), ``x-goog-api-key: X`` and
``?key=X`` (``api_key``). Empty values do not count.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from liveproxy.emulator.endings import Close
from liveproxy.emulator.record import CredentialKind
from liveproxy.emulator.routes import Route
from liveproxy.protocol.closes import (
    API_KEY_INVALID,
    INVALID_PAYLOAD,
    POLICY,
    UNREGISTERED_CALLER,
)

#: Google's reason for an ephemeral token it does not know.
TOKEN_INVALID = "Missing or malformed auth token"
#: Google's reason for an OAuth access token it does not accept.
BEARER_INVALID = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential."
)

_SCHEMES: dict[str, CredentialKind] = {"bearer": "bearer", "token": "token"}


def find_credential(
    headers: Mapping[str, str], query: Mapping[str, str]
) -> tuple[str, CredentialKind] | None:
    """The request's credential and its kind, or None. ``headers`` names are lower-case."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    kind = _SCHEMES.get(scheme.lower())
    if kind is not None and value.strip():
        return value.strip(), kind
    if query.get("access_token"):
        return query["access_token"], "access_token"
    if headers.get("x-goog-api-key", "").strip():
        return headers["x-goog-api-key"].strip(), "api_key"
    if query.get("key"):
        return query["key"], "api_key"
    return None


def refusal(
    found: tuple[str, CredentialKind] | None,
    route: Route,
    api_keys: tuple[str, ...],
    minted: Container[str] = (),
) -> Close | None:
    """The close Google answers this credential with, or None if it is accepted.

    No credential, or an ephemeral token on a method other than
    ``BidiGenerateContentConstrained``, is an unregistered caller (1008). A token the
    emulator ``minted`` is accepted as a token (its own rules apply at the setup:
    :mod:`~liveproxy.emulator.tokens`), never as an API key (1007 "API key not valid...").
    With ``api_keys`` given, any other credential must be one of them: a wrong API key closes
    1007 "API key not valid...", a wrong ephemeral token 1007 "Missing or malformed auth
    token", a wrong bearer token 1008 "Request had invalid authentication credentials...".
    """
    if found is None:
        return Close(POLICY, UNREGISTERED_CALLER)
    credential, kind = found
    if kind in ("token", "access_token") and not route.constrained:
        return Close(POLICY, UNREGISTERED_CALLER)
    if credential in minted:
        if kind == "api_key":
            return Close(INVALID_PAYLOAD, API_KEY_INVALID)
        if kind == "bearer":
            return Close(POLICY, BEARER_INVALID)
        return None
    if not api_keys or credential in api_keys:
        return None
    if kind == "api_key":
        return Close(INVALID_PAYLOAD, API_KEY_INVALID)
    if kind == "bearer":
        return Close(POLICY, BEARER_INVALID)
    return Close(INVALID_PAYLOAD, TOKEN_INVALID)
