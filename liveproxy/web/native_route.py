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
ephemeral one: 1007 "Missing or malformed auth token"; a disallowed origin 1008; at capacity
(here or across the store, or the client's ``MAX_SESSIONS_PER_CLIENT``) or without the state
store 1011; a resumption handle that names no conversation for this origin and client 1008
"BidiGenerateContent session not found". Nothing is dialled upstream for a refused socket.

Resumption: a setup with ``sessionResumption`` is answered with a liveproxy handle
(``sessionResumptionUpdate``, see :mod:`liveproxy.web.ws_route`), the browser protocol's resume
token under Google's name. A setup resuming that handle with the same token (even with its
uses spent, until its ``expireTime``) continues the conversation kept under it
(:mod:`liveproxy.web.resume`), with its stored setup.
"""

from __future__ import annotations

import logging
import secrets
from typing import Final
from urllib.parse import parse_qs

import attrs
import trio

from liveproxy.contract.errors import AtCapacity, InvalidSetup, SessionError
from liveproxy.contract.native import (
    MALFORMED_TOKEN,
    asked_resumption,
    native_close,
    read_constraints,
)
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.core.ports import BrowserGone, Frame
from liveproxy.logs import SESSION_ID
from liveproxy.protocol import closes
from liveproxy.store import Lease, Limits, Refused, StoreUnavailable
from liveproxy.web import resume
from liveproxy.web.admission import Admitted, end_lease, open_socket
from liveproxy.web.asgi import ASGIMessage, header
from liveproxy.web.browser_socket import BrowserSocket
from liveproxy.web.ephemeral import TOKEN_PREFIX
from liveproxy.web.metrics import Metrics
from liveproxy.web.origins import OriginPolicy
from liveproxy.web.responses import Refusal
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

#: Why a native socket whose first message did not come in time is closed (1007).
NO_SETUP: Final = "no setup message came in time"

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
    or left. Sets :data:`~liveproxy.logs.SESSION_ID` for the admitted session.

    The token is checked first; then the setup is read (and given back to the socket for the
    session), and the token spent for its lease: a setup resuming a handle spends no use; a
    handle that names no conversation kept for this origin and client closes 1008
    "BidiGenerateContent session not found", as Google does.
    """

    async def refuse_with(reason: str, message: str) -> None:
        at_capacity = reason == AtCapacity.code
        await socket.close(closes.INTERNAL if at_capacity else closes.POLICY, message)

    opened_at = await open_socket(state, socket, policy, metrics, refuse_with)
    if opened_at is None:
        return None
    origin = header(socket.scope, b"origin")
    try:
        token = native_token(socket.scope)
        if token is None:
            raise _Refusal("unauthorized", closes.POLICY, closes.UNREGISTERED_CALLER)
        await _check_token(state, token, origin)
        first = await _first_frame(state, socket)
        if first is None:
            return None
        socket.unread(first)
        asked, handle = asked_resumption(first)
        session_id = secrets.token_hex(8)
        SESSION_ID.set(session_id)
        lease, constraints = await _spend(
            state, token, session_id, origin, resuming=handle is not None
        )
        if handle is not None:
            lease = await _resume(state, lease, handle)
    except _Refusal as refusal:
        metrics.socket_refused(refusal.label)
        await socket.close(refusal.code, refusal.reason)
        return None
    return Admitted(session_id, lease, opened_at, native=constraints, resumption=asked)


@attrs.define(eq=False)
class _Refusal(Exception):
    """Why a native socket is refused: the metrics' label, and its close."""

    label: str
    code: int
    reason: str


def _malformed() -> _Refusal:
    return _Refusal("unauthorized", closes.INVALID_PAYLOAD, MALFORMED_TOKEN)


def _unreachable() -> _Refusal:
    return _Refusal("state_unavailable", closes.INTERNAL, "the state store is unreachable")


async def _check_token(state: ProxyState, token: str, origin: str | None) -> None:
    """Refuse at once, as Google does, a token that cannot open a session from ``origin``
    (spending nothing: the setup decides whether a use is spent)."""
    try:
        known = await state.store.ephemeral_grant(token)
    except StoreUnavailable:
        log.warning("state store unreachable: a session's token could not be checked")
        raise _unreachable() from None
    if known is None or known.origin != origin:
        log.debug("native socket refused: unknown, spent or expired token, or another origin's")
        raise _malformed()


async def _first_frame(state: ProxyState, socket: BrowserSocket) -> Frame | None:
    """The client's first message (its setup), read within the setup timeout; None when the
    client left.

    Raises:
        _Refusal: none in time (1007), or a frame the socket refuses (closed as the session
            would close for it).
    """
    try:
        with trio.move_on_after(state.config.setup_timeout_seconds):
            return await socket.receive()
    except BrowserGone:
        return None
    except SessionError as exc:
        raise _Refusal(exc.code, *native_close(exc)) from None
    raise _Refusal(InvalidSetup.code, closes.INVALID_PAYLOAD, NO_SETUP)


async def _spend(
    state: ProxyState, token: str, session_id: str, origin: str | None, *, resuming: bool
) -> tuple[Lease, EphemeralRequest]:
    """The lease for this session (a use of the token spent, none when ``resuming``) and the
    token's constraints.

    Raises:
        _Refusal: the token cannot open it (1007), it does not fit the store's limits or the
            store is unreachable (1011).
    """
    config = state.config
    limits = Limits(config.token_ttl_seconds, config.max_sessions, config.max_sessions_per_client)
    try:
        lease = await state.store.start_native(token, session_id, limits, resuming=resuming)
    except StoreUnavailable:
        log.warning("state store unreachable: a session's token could not be checked")
        raise _unreachable() from None
    if isinstance(lease, Refused):
        raise _Refusal(lease.code, closes.INTERNAL, lease.message)
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
        raise _malformed()
    return lease, constraints


async def _resume(state: ProxyState, lease: Lease, handle: str) -> Lease:
    """``lease`` carrying the conversation kept under ``handle`` for its origin and client,
    taken (single use) as ``POST /api/auth {"resume"}`` takes one (:func:`resume.take`).

    Raises:
        _Refusal: unknown, used, expired, someone else's or unreadable (1008 "session not
            found"), or the store unreachable (1011); the lease is given back.
    """
    grant = lease.grant
    try:
        conversation, _ = await resume.take(state.store, handle, grant.origin, grant.client)
    except Refusal as refused:
        await end_lease(state.store, lease)
        if refused.status == 503:
            raise _unreachable() from None
        raise _Refusal("resume_not_found", closes.POLICY, closes.SESSION_NOT_FOUND) from None
    return attrs.evolve(lease, grant=attrs.evolve(grant, resume=conversation.state))
