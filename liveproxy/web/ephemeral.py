"""Ephemeral tokens: ``POST /api/auth {"ephemeral": {...}}`` mints a token for the
Gemini-native endpoint (:mod:`liveproxy.web.native_route`), behind the same rules as a session
token (the auth route's origin, sign-in, rate and store admission), answered the way Google's
``auth_tokens.create`` answers.

The token is a session token (kept as a hash in the state store) whose grant carries its
constraints (:attr:`~liveproxy.store.Grant.ephemeral`): they are never taken from the client
again. It starts ``uses`` sessions (1 by default, 0 unlimited:
:attr:`~liveproxy.store.Grant.uses`) until ``newSessionExpireTime``, and resumes them until
``expireTime``, its uses spent or not (:meth:`~liveproxy.store.StateStore.start_native`).

``newSessionExpireTime`` is when the token can no longer start a session
(``TOKEN_TTL_SECONDS`` from now); ``expireTime`` the latest its session can end (that, plus the
session's time limit). ``expire_seconds`` asks for the session's time limit, clamped like
``session_duration``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
from quart import Response

from liveproxy.config import Config
from liveproxy.contract.native import check_constraints, constraints_text
from liveproxy.contract.payloads import AuthRequest
from liveproxy.contract.session_setup import SetupPolicy
from liveproxy.store import Grant
from liveproxy.web.responses import Refusal, json_response

#: What a token's name starts with, as Google's SDKs expect it (``auth_tokens/<token>``).
TOKEN_PREFIX = "auth_tokens/"


def constrained_grant(
    body: AuthRequest, grant: Grant, config: Config, policy: SetupPolicy
) -> Grant:
    """``grant`` for an ephemeral token when ``body`` asks for one (its constraints and time
    limit), else ``grant`` itself.

    Raises:
        Refusal: 400 ``bad_request``: a model the server does not serve, a config that is not
            a Gemini setup.
    """
    request = body.ephemeral
    if request is None:
        return grant
    refusal = check_constraints(request, policy)
    if refusal is not None:
        raise Refusal(400, "bad_request", refusal)
    limit = config.session_time_limit
    if request.expire_seconds is not None:
        limit = min(
            max(request.expire_seconds, config.session_min_seconds), config.session_max_seconds
        )
    return attrs.evolve(
        grant,
        session_time_limit=limit,
        ephemeral=constraints_text(request),
        uses=request.uses,
    )


def ephemeral_answer(token: str, grant: Grant, token_ttl: float) -> Response:
    """``{"name": "auth_tokens/<token>", "expireTime", "newSessionExpireTime",
    "session_time_limit"}`` (times in RFC 3339, UTC)."""
    now = datetime.now(UTC)
    new_session_until = now + timedelta(seconds=token_ttl)
    until = new_session_until + timedelta(seconds=grant.session_time_limit)
    return json_response(
        {
            "name": TOKEN_PREFIX + token,
            "expireTime": _rfc3339(until),
            "newSessionExpireTime": _rfc3339(new_session_until),
            "session_time_limit": grant.session_time_limit,
        }
    )


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
