"""The ``/ws`` route at the ASGI level: authorise a browser WebSocket and run its session.

Served below Quart (see :class:`SessionRoute`) so the audio hot path skips Quart's per-message
task hop and signal dispatch. The route owns the browser writer: Hypercorn writes to sockets in
a shielded cancel scope, so a browser that stopped reading can hold a write forever, and the
session has to end (upstream closed, gauges down) regardless.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import parse_qs

import trio

from liveproxy.contract.codec import encode_error, encode_session_end
from liveproxy.contract.endings import UNAUTHORIZED, Outcome, outcome_code
from liveproxy.contract.errors import AtCapacity, SessionError, SlowClient, StateUnavailable
from liveproxy.contract.payloads import ErrorEvent, SessionEnd
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.resumable import Resumable
from liveproxy.core.session import Session
from liveproxy.core.stats import SessionCounters
from liveproxy.logs import SESSION_ID, fields
from liveproxy.store import Conversation, Grant, Lease, StoreUnavailable
from liveproxy.web.asgi import ASGIMessage, Receive, Send, header
from liveproxy.web.browser_socket import BrowserSocket
from liveproxy.web.clients import client_hash
from liveproxy.web.metrics import NO_METRICS, Metrics
from liveproxy.web.origins import OriginPolicy
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

#: The answer to an upgrade while the server drains (the token is not spent).
SHUTTING_DOWN = b'{"error": {"code": "shutting_down", "message": "the server is shutting down"}}'
#: How long a session's last store update may take once the session is over.
STORE_TIMEOUT_SECONDS = 5.0


class SessionRoute:
    """ASGI middleware: ``/ws`` WebSockets become sessions; everything else goes to Quart."""

    def __init__(
        self, app: Any, state: ProxyState, policy: OriginPolicy, metrics: Metrics = NO_METRICS
    ) -> None:
        self._app = app
        self._state = state
        self._policy = policy
        self._metrics = metrics
        self._paths = frozenset(state.config.ws_paths)

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] in self._paths:
            socket = BrowserSocket(
                scope, receive, send, max_message_bytes=self._state.config.max_message_bytes
            )
            await serve_session(self._state, socket, self._policy, self._metrics)
        else:
            await self._app(scope, receive, send)


async def serve_session(
    state: ProxyState, socket: BrowserSocket, policy: OriginPolicy, metrics: Metrics = NO_METRICS
) -> None:
    """Accept, authorise and run one browser session; the socket is closed on return."""
    state.gauges.browser_opened(1)
    try:
        await _serve_session(state, socket, policy, metrics)
    finally:
        state.gauges.browser_opened(-1)
        metrics.socket_frames(socket.frames_in, socket.frames_out)


async def _serve_session(
    state: ProxyState, socket: BrowserSocket, policy: OriginPolicy, metrics: Metrics
) -> None:
    """Authorise the socket and run its session; the route's writer sends its last frames.

    While draining the upgrade is refused with HTTP 503 ``shutting_down``. Refusals after it
    (origin, capacity, token, an unreachable store) close the socket at once;
    a session's failure that is not a :class:`SessionError` is logged and ends it with
    ``internal_error``. Cancelled when the browser leaves (Hypercorn cancels the app), which
    ends the session's tasks too.
    """
    if state.draining:  # refused before the upgrade: a proxy in front can try another instance
        metrics.socket_refused("shutting_down")
        await socket.reject(503, SHUTTING_DOWN)
        return
    if not await socket.accept():
        return
    opened_at = trio.current_time()
    origin = header(socket.scope, b"origin")
    if origin is not None and not policy.allows_request(socket.scope, origin):
        metrics.socket_refused("forbidden_origin")
        await socket.close(UNAUTHORIZED, "Forbidden origin")
        return
    config = state.config
    if state.gauges.live_sessions >= config.max_sessions:
        metrics.socket_refused(AtCapacity.code)
        await _refuse(socket, AtCapacity(f"at capacity ({config.max_sessions} sessions)"))
        return
    token = parse_qs(socket.query_string.decode("latin-1")).get("token", [None])[0]
    session_id = secrets.token_hex(8)
    SESSION_ID.set(session_id)  # every line logged for this session, by any of its tasks
    try:
        lease = await state.store.start_session(token, session_id)
    except StoreUnavailable:
        log.warning("state store unreachable: a session's token could not be checked")
        metrics.socket_refused(StateUnavailable.code)
        await _refuse(socket, StateUnavailable("the state store is unreachable"))
        return
    if lease is None or lease.grant.origin != origin:  # a token is bound to the page that minted it
        if lease is not None:
            await _end_lease(state, lease)
        log.debug("socket refused: unknown, spent or expired token, or another origin's")
        metrics.socket_refused("unauthorized")
        await socket.close(UNAUTHORIZED, "Unauthorized")
        return

    grant = lease.grant
    resumed = _resumed(grant)
    conversation_id = resumed.conversation_id if resumed else session_id
    time_limit = resumed.remaining_seconds if resumed else grant.session_time_limit
    resume_token = secrets.token_urlsafe(32) if config.resume_window_seconds else None
    queue = BrowserQueue(config.browser_queue_bytes)
    session = Session(
        socket,
        queue,
        state.services,
        time_limit=time_limit,
        resumed=resumed,
        resume_token=resume_token,
    )
    counters = session.counters
    counters.on_setup = lambda: metrics.setup_completed(trio.current_time() - opened_at)
    reconnects = counters.reconnects  # a conversation resumed on this socket brings its own
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run_writer, socket)
        state.leases.held[lease.id] = lease
        state.gauges.session_started()
        metrics.session_started()
        log.info(
            "session %s started (limit %ss)%s",
            session_id,
            round(time_limit),
            f", continuing conversation {conversation_id}" if resumed else "",
            extra=fields(
                "session_started",
                client=client_hash(grant.client),
                time_limit=round(time_limit),
                conversation_id=conversation_id,
                resumed=resumed is not None,
            ),
        )
        outcome: Outcome | None = None
        try:
            outcome = await session.run()
        except Exception:
            log.exception("session %s failed unexpectedly", session_id)
            outcome = SessionError("the proxy failed unexpectedly")
        finally:
            state.gauges.session_ended()
            metrics.session_closed()
            del state.leases.held[lease.id]
            # Even when the session is cancelled (the browser gone): the place comes back, and
            # the conversation is kept for a new socket.
            with trio.move_on_after(STORE_TIMEOUT_SECONDS, shield=True):
                await _end_lease(state, lease)
                if resume_token is not None:
                    await _keep_conversation(
                        state, session.resumable(outcome, conversation_id), resume_token, grant
                    )
        assert outcome is not None
        _log_end(session_id, session, outcome, grant.client)
        metrics.session_ended(outcome, counters.reconnects - reconnects)
        _finish(queue, session, outcome)


def _resumed(grant: Grant) -> Resumable | None:
    """The conversation a resume token's grant continues (None: a new one, or a stored state
    that cannot be read, which then starts anew rather than fail)."""
    if grant.resume is None:
        return None
    try:
        return Resumable.from_json(grant.resume)
    except ValueError:
        log.warning("a resumed conversation's stored state is unreadable: starting anew")
        return None


async def _keep_conversation(
    state: ProxyState, resumable: Resumable | None, token: str, grant: Grant
) -> None:
    """Keep the conversation for a new socket, for ``RESUME_WINDOW_SECONDS``, under ``token``
    (only the same origin, and the same signed-in client, may take it back)."""
    if resumable is None:
        return
    encoded = resumable.to_json()
    if encoded is None:
        log.info("conversation %s not kept: its state is too large", resumable.conversation_id)
        return
    conversation = Conversation(grant.origin, resume_client(grant.client), encoded)
    window = state.config.resume_window_seconds
    try:
        await state.store.keep_conversation(token, conversation, window)
    except StoreUnavailable:
        log.warning("state store unreachable: a conversation could not be kept for resuming")
        return
    log.info(
        "conversation %s resumable for %gs",
        resumable.conversation_id,
        window,
        extra=fields(
            "conversation_kept",
            conversation_id=resumable.conversation_id,
            remaining_seconds=resumable.remaining_seconds,
        ),
    )


async def _refuse(socket: BrowserSocket, refusal: SessionError) -> None:
    """Send ``refusal`` as the socket's only event and close it with its code."""
    stats = SessionCounters(started_at=trio.current_time()).snapshot()
    await socket.send(encode_error(ErrorEvent(refusal.code, refusal.message, stats)))
    await socket.close(refusal.close_code, refusal.code)


async def _end_lease(state: ProxyState, lease: Lease) -> None:
    """Give the lease's place back, even from a cancelled session (shielded, bounded); if the
    store cannot be reached the lease simply expires."""
    with trio.move_on_after(STORE_TIMEOUT_SECONDS, shield=True):
        try:
            await state.store.end_session(lease)
        except StoreUnavailable:
            log.warning("state store unreachable: a session's lease is left to expire")


def resume_client(client: str) -> str:
    """Who may resume a conversation besides its origin: a signed-in client (``sub:...``) must
    be the same; an address is not checked (a phone moving from Wi-Fi to mobile data changes
    it, and that is when a conversation most needs resuming)."""
    return client if client.startswith("sub:") else ""


def _finish(queue: BrowserQueue, session: Session, outcome: Outcome) -> None:
    """Queue the session's last message and close code (the contract's endings table)."""
    stats = session.counters.snapshot()
    if isinstance(outcome, SessionError):
        event = encode_error(ErrorEvent(outcome.code, outcome.message, stats))
        queue.finish(event, outcome.close_code, outcome.code, drop=isinstance(outcome, SlowClient))
    elif outcome.announced:
        end = encode_session_end(SessionEnd(outcome.reason, stats))
        queue.finish(end, outcome.close_code, outcome.reason)
    else:
        queue.finish(None, outcome.close_code)


def _log_end(session_id: str, session: Session, outcome: Outcome, client: str) -> None:
    counters = session.counters
    reason = outcome_code(outcome)
    log.info(
        "session %s ended after %.1fs: %s (messages=%d audio_in=%d reconnects=%d)",
        session_id,
        counters.elapsed(),
        reason,
        counters.message_count,
        counters.audio_chunks_sent,
        counters.reconnects,
        extra=fields(
            "session_ended",
            reason=reason,
            client=client_hash(client),
            seconds=round(counters.elapsed(), 3),
            messages=counters.message_count,
            audio_in=counters.audio_chunks_sent,
            reconnects=counters.reconnects,
        ),
    )
    if isinstance(outcome, SessionError):
        log.info("session %s error: %s", session_id, outcome.message)
