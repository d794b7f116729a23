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
from liveproxy.contract.errors import AtCapacity, SessionError, SlowClient
from liveproxy.contract.models import ErrorEvent, SessionEnd
from liveproxy.core.browser import ASGIMessage, BrowserQueue, BrowserSocket, Receive, Send
from liveproxy.core.session import Session
from liveproxy.core.stats import SessionCounters
from liveproxy.protocol import closes
from liveproxy.web.origins import OriginPolicy, header
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

#: How long a session's last store update may take once the session is over.
STORE_TIMEOUT_SECONDS = 5.0


class SessionRoute:
    """ASGI middleware: ``/ws`` WebSockets become sessions; everything else goes to Quart."""

    def __init__(self, app: Any, state: ProxyState, policy: OriginPolicy) -> None:
        self._app = app
        self._state = state
        self._policy = policy
        self._paths = frozenset(state.config.ws_paths)

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] in self._paths:
            socket = BrowserSocket(
                scope, receive, send, max_message_bytes=self._state.config.max_message_bytes
            )
            await serve_session(self._state, socket, self._policy)
        else:
            await self._app(scope, receive, send)


async def serve_session(state: ProxyState, socket: BrowserSocket, policy: OriginPolicy) -> None:
    """Accept, authorise and run one browser session; the socket is closed on return."""
    state.gauges.browser_opened(1)
    try:
        await _serve_session(state, socket, policy)
    finally:
        state.gauges.browser_opened(-1)


async def _serve_session(state: ProxyState, socket: BrowserSocket, policy: OriginPolicy) -> None:
    """Authorise the socket and run its session; the route's writer sends its last frames.

    Refusals (origin, token, draining, capacity) close the socket at once; a session's failure
    that is not a :class:`SessionError` is logged and ends it with ``internal_error``. Cancelled
    when the browser leaves (Hypercorn cancels the app), which ends the session's tasks too.
    """
    if not await socket.accept():
        return
    origin = header(socket.scope, b"origin")
    if origin is not None and not policy.allows(origin, header(socket.scope, b"host")):
        await socket.close(UNAUTHORIZED, "Forbidden origin")
        return
    token = parse_qs(socket.query_string.decode("latin-1")).get("token", [None])[0]
    grant = await state.store.consume(token)
    if grant is None or grant.origin != origin:  # a token is bound to the page that minted it
        await socket.close(UNAUTHORIZED, "Unauthorized")
        return
    if state.draining:
        await socket.close(closes.GOING_AWAY, "server shutting down")
        return
    config = state.config
    if state.gauges.live_sessions >= config.max_sessions:
        refusal = AtCapacity(f"at capacity ({config.max_sessions} sessions)")
        stats = SessionCounters(started_at=trio.current_time()).snapshot()
        await socket.send(encode_error(ErrorEvent(refusal.code, refusal.message, stats)))
        await socket.close(refusal.close_code, refusal.code)
        return

    session_id = secrets.token_hex(4)
    queue = BrowserQueue(config.browser_queue_bytes)
    session = Session(socket, queue, state.services, time_limit=grant.session_time_limit)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run_writer, socket)
        await state.store.session_started(grant.client)
        state.gauges.session_started()
        log.info("session %s started (limit %ss)", session_id, grant.session_time_limit)
        outcome: Outcome
        try:
            outcome = await session.run()
        except Exception:
            log.exception("session %s failed unexpectedly", session_id)
            outcome = SessionError("the proxy failed unexpectedly")
        finally:
            state.gauges.session_ended()
            # The client's count must come back even when the session is cancelled.
            with trio.move_on_after(STORE_TIMEOUT_SECONDS, shield=True):
                await state.store.session_ended(grant.client)
        _log_end(session_id, session, outcome)
        _finish(queue, session, outcome)


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


def _log_end(session_id: str, session: Session, outcome: Outcome) -> None:
    counters = session.counters
    log.info(
        "session %s ended after %.1fs: %s (messages=%d audio_in=%d reconnects=%d)",
        session_id,
        counters.elapsed(),
        outcome_code(outcome),
        counters.message_count,
        counters.audio_chunks_sent,
        counters.reconnects,
    )
    if isinstance(outcome, SessionError):
        log.info("session %s error: %s", session_id, outcome.message)
