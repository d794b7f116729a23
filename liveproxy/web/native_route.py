"""The Gemini-native endpoint: Google's own WebSocket paths, for Google's SDKs pointed at
liveproxy's base URL with an ephemeral token (:mod:`liveproxy.web.ephemeral`).

Served at ``/ws/google.ai.generativelanguage.{v1alpha,v1beta}.GenerativeService.``
``BidiGenerateContent`` and ``...BidiGenerateContentConstrained`` (also with the leading
``//`` the JS SDK writes). The token comes as ``?access_token=``, ``Authorization: Token``,
``x-goog-api-key`` or ``?key=`` (with or without its ``auth_tokens/`` prefix).

Admission is the browser socket's (:mod:`liveproxy.web.admission`: draining, origin, capacity,
the token spent for a lease bound to the origin that minted it), refused the way Google
refuses: past the upgrade, a close frame and no JSON event. No token: 1008 "Method doesn't allow
unregistered callers"; a token unknown, spent, expired, minted for another origin or not an
ephemeral one: 1007 "Missing or malformed auth token"; a disallowed origin 1008; at capacity or
without the state store 1011. Nothing is dialled upstream for a refused socket.
"""

from __future__ import annotations

import logging
import secrets
from typing import Final
from urllib.parse import parse_qs

import trio

from liveproxy.contract.native import MALFORMED_TOKEN, read_constraints
from liveproxy.logs import SESSION_ID
from liveproxy.protocol import closes
from liveproxy.store import StoreUnavailable
from liveproxy.web.admission import SHUTTING_DOWN, Admitted, end_lease
from liveproxy.web.asgi import ASGIMessage, header
from liveproxy.web.browser_socket import BrowserSocket
from liveproxy.web.ephemeral import TOKEN_PREFIX
from liveproxy.web.metrics import Metrics
from liveproxy.web.origins import OriginPolicy
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

#: Google's Live API paths served (``v1`` is not: Google takes no ephemeral token there).
NATIVE_PATHS: Final = frozenset(
    f"/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}"
    for version in ("v1alpha", "v1beta")
    for method in ("BidiGenerateContent", "BidiGenerateContentConstrained")
)


def is_native_path(path: str) -> bool:
    """Whether ``path`` is one of Google's Live API paths (leading slashes collapsed)."""
    return path.startswith("/") and "/" + path.lstrip("/") in NATIVE_PATHS


def native_token(scope: ASGIMessage) -> str | None:
    """The token the client sent, without ``auth_tokens/``: ``?access_token=``,
    ``Authorization: Token ...``, ``x-goog-api-key``, then ``?key=``."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    authorization = header(scope, b"authorization")
    token_header = None
    if authorization is not None and authorization[:6].lower() == "token ":
        token_header = authorization[6:].strip()
    for candidate in (
        query.get("access_token", [None])[0],
        token_header,
        header(scope, b"x-goog-api-key"),
        query.get("key", [None])[0],
    ):
        if candidate:
            return candidate.removeprefix(TOKEN_PREFIX)
    return None


async def admit_native(
    state: ProxyState, socket: BrowserSocket, policy: OriginPolicy, metrics: Metrics
) -> Admitted | None:
    """Accept and authorise a native client's socket; None when it was refused (and closed)
    or left. Sets :data:`~liveproxy.logs.SESSION_ID` for the admitted session."""
    if state.draining:
        metrics.socket_refused("shutting_down")
        await socket.reject(503, SHUTTING_DOWN)
        return None
    if not await socket.accept():
        return None
    opened_at = trio.current_time()
    origin = header(socket.scope, b"origin")
    if origin is not None and not policy.allows_request(socket.scope, origin):
        metrics.socket_refused("forbidden_origin")
        await socket.close(closes.POLICY, "Forbidden origin")
        return None
    limit = state.config.max_sessions
    if state.gauges.live_sessions >= limit:
        metrics.socket_refused("at_capacity")
        await socket.close(closes.INTERNAL, f"at capacity ({limit} sessions)")
        return None
    token = native_token(socket.scope)
    if token is None:
        metrics.socket_refused("unauthorized")
        await socket.close(closes.POLICY, closes.UNREGISTERED_CALLER)
        return None
    session_id = secrets.token_hex(8)
    SESSION_ID.set(session_id)
    try:
        lease = await state.store.start_session(token, session_id)
    except StoreUnavailable:
        log.warning("state store unreachable: a session's token could not be checked")
        metrics.socket_refused("state_unavailable")
        await socket.close(closes.INTERNAL, "the state store is unreachable")
        return None
    constraints = None
    if lease is not None and lease.grant.origin == origin and lease.grant.ephemeral is not None:
        try:
            constraints = read_constraints(lease.grant.ephemeral)
        except ValueError:
            log.warning("an ephemeral token's stored constraints are unreadable")
    if lease is None or constraints is None:
        if lease is not None:
            await end_lease(state.store, lease)
        log.debug("native socket refused: unknown, spent or expired token, or another origin's")
        metrics.socket_refused("unauthorized")
        await socket.close(closes.INVALID_PAYLOAD, MALFORMED_TOKEN)
        return None
    return Admitted(session_id, lease, opened_at, native=constraints)
