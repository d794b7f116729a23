"""Admitting a browser's socket: draining, origin, capacity, token -> a lease or a refusal.

While the server drains, the upgrade is refused with HTTP 503 ``shutting_down`` (its token
unspent: a proxy in front can try another instance). Past the upgrade, a refusal closes the
socket at once: a disallowed origin or an unknown, spent, expired or other page's token with
4003, this process at capacity or an unreachable store with their ``error`` event first.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import attrs
import trio

from liveproxy.contract.codec import encode_error
from liveproxy.contract.endings import UNAUTHORIZED
from liveproxy.contract.errors import AtCapacity, SessionError, StateUnavailable
from liveproxy.contract.payloads import EphemeralRequest, ErrorEvent
from liveproxy.core.stats import SessionCounters
from liveproxy.logs import SESSION_ID
from liveproxy.store import Lease, StateStore, StoreUnavailable
from liveproxy.web.asgi import header
from liveproxy.web.browser_socket import BrowserSocket
from liveproxy.web.metrics import Metrics
from liveproxy.web.origins import OriginPolicy
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

#: The answer to an upgrade while the server drains (the token is not spent).
SHUTTING_DOWN = b'{"error": {"code": "shutting_down", "message": "the server is shutting down"}}'
#: How long a store update may take once the socket is refused or its session over.
STORE_TIMEOUT_SECONDS = 5.0


@attrs.frozen
class Admitted:
    """A socket whose token was spent: its session's id, its lease, when it was accepted, and
    (a Gemini-native client's) its ephemeral token's constraints and whether its setup asked
    for session resumption."""

    session_id: str
    lease: Lease
    opened_at: float
    native: EphemeralRequest | None = None
    resumption: bool = False


#: How a socket refused after its upgrade is closed, by reason (``forbidden_origin``,
#: ``at_capacity``) and message: each endpoint closes its own way.
Refuse = Callable[[str, str], Awaitable[None]]


async def open_socket(
    state: ProxyState,
    socket: BrowserSocket,
    policy: OriginPolicy,
    metrics: Metrics,
    refuse_with: Refuse,
) -> float | None:
    """The steps every session socket passes first: refused before the upgrade while the
    server drains (503, its token unspent: a proxy in front can try another instance);
    accepted; then refused (``refuse_with``) for a disallowed origin or a process at capacity.

    Returns when it was accepted, or None when it was refused (and closed) or left.
    """
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
        await refuse_with("forbidden_origin", "Forbidden origin")
        return None
    limit = state.config.max_sessions
    if state.gauges.live_sessions >= limit:
        metrics.socket_refused(AtCapacity.code)
        await refuse_with(AtCapacity.code, f"at capacity ({limit} sessions)")
        return None
    return opened_at


async def admit(
    state: ProxyState, socket: BrowserSocket, policy: OriginPolicy, metrics: Metrics
) -> Admitted | None:
    """Accept and authorise ``socket``; None when it was refused (and closed) or left.

    Sets :data:`~liveproxy.logs.SESSION_ID` for the admitted session's every log line.
    """

    async def refuse_with(reason: str, message: str) -> None:
        if reason == AtCapacity.code:
            await refuse(socket, AtCapacity(message))
        else:
            await socket.close(UNAUTHORIZED, message)

    opened_at = await open_socket(state, socket, policy, metrics, refuse_with)
    if opened_at is None:
        return None
    origin = header(socket.scope, b"origin")
    token = parse_qs(socket.query_string.decode("latin-1")).get("token", [None])[0]
    session_id = secrets.token_hex(8)
    SESSION_ID.set(session_id)  # every line logged for this session, by any of its tasks
    try:
        lease = await state.store.start_session(token, session_id)
    except StoreUnavailable:
        log.warning("state store unreachable: a session's token could not be checked")
        metrics.socket_refused(StateUnavailable.code)
        await refuse(socket, StateUnavailable("the state store is unreachable"))
        return None
    # A token is bound to the page that minted it; an ephemeral one to the native endpoint.
    if lease is None or lease.grant.origin != origin or lease.grant.ephemeral is not None:
        if lease is not None:
            await end_lease(state.store, lease)
        log.debug("socket refused: unknown, spent or expired token, or another origin's")
        metrics.socket_refused("unauthorized")
        await socket.close(UNAUTHORIZED, "Unauthorized")
        return None
    return Admitted(session_id, lease, opened_at)


async def refuse(socket: BrowserSocket, refusal: SessionError) -> None:
    """Send ``refusal`` as the socket's only event and close it with its code."""
    stats = SessionCounters(started_at=trio.current_time()).snapshot()
    await socket.send(encode_error(ErrorEvent(refusal.code, refusal.message, stats)))
    await socket.close(refusal.close_code, refusal.code)


async def end_lease(store: StateStore, lease: Lease) -> None:
    """Give the lease's place back, even from a cancelled session (shielded, bounded); if the
    store cannot be reached the lease simply expires."""
    with trio.move_on_after(STORE_TIMEOUT_SECONDS, shield=True):
        try:
            await store.end_session(lease)
        except StoreUnavailable:
            log.warning("state store unreachable: a session's lease is left to expire")
