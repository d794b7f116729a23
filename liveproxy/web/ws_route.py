"""The ``/ws`` route at the ASGI level: an admitted browser WebSocket runs its session (and so
does a Gemini-native client's at Google's paths: :mod:`liveproxy.web.native_route`).

Served below Quart (see :class:`SessionRoute`) so the audio hot path skips Quart's per-message
task hop and signal dispatch. The route owns the browser writer: Hypercorn writes to sockets in
a shielded cancel scope, so a browser that stopped reading can hold a write forever, and the
session has to end (upstream closed, gauges down) regardless.
"""

from __future__ import annotations

import logging
import secrets
from functools import partial
from typing import Any

import attrs
import orjson
import trio

from liveproxy.allowances import PRICES_CURRENCY
from liveproxy.contract.codec import encode_error, encode_session_end
from liveproxy.contract.endings import BUDGET_EXHAUSTED, Outcome, outcome_code
from liveproxy.contract.errors import SessionError, SlowClient
from liveproxy.contract.native import native_close
from liveproxy.contract.payloads import ErrorEvent, SessionEnd
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.budget import Used
from liveproxy.core.session import Session
from liveproxy.core.usage import UsageTotals, usage_since
from liveproxy.logs import fields
from liveproxy.tools import ToolContext
from liveproxy.web import resume, usage_log
from liveproxy.web.admission import STORE_TIMEOUT_SECONDS, Admitted, admit, end_lease
from liveproxy.web.asgi import ASGIMessage, Receive, Send
from liveproxy.web.browser_socket import BrowserSocket
from liveproxy.web.clients import client_hash
from liveproxy.web.metrics import NO_METRICS, Metrics
from liveproxy.web.native_route import admit_native, is_native_path
from liveproxy.web.operator_records import live_summary
from liveproxy.web.origins import OriginPolicy
from liveproxy.web.session_tools import SessionTools
from liveproxy.web.state import ProxyState
from liveproxy.web.usage_log import usage_dict, usage_record

log = logging.getLogger("liveproxy")

#: Errors that say upstream failed, logged at WARNING (the rest of the endings at INFO).
UPSTREAM_ERRORS = frozenset({"upstream_unavailable", "upstream_rejected", "upstream_error"})


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
        if scope["type"] == "websocket" and (
            scope["path"] in self._paths or is_native_path(scope["path"])
        ):
            socket = BrowserSocket(
                scope, receive, send, max_message_bytes=self._state.config.max_message_bytes
            )
            native = scope["path"] not in self._paths
            await serve_session(self._state, socket, self._policy, self._metrics, native=native)
        else:
            await self._app(scope, receive, send)


async def serve_session(
    state: ProxyState,
    socket: BrowserSocket,
    policy: OriginPolicy,
    metrics: Metrics = NO_METRICS,
    *,
    native: bool = False,
) -> None:
    """Admit and run one browser session (``native``: a Gemini-native client's, see
    :mod:`liveproxy.web.native_route`); the socket is closed on return.

    Cancelled when the browser leaves (Hypercorn cancels the app), which ends the session's
    tasks too.
    """
    state.gauges.browser_opened(1)
    try:
        admitted = await (admit_native if native else admit)(state, socket, policy, metrics)
        if admitted is not None:
            await _run(state, socket, admitted, metrics)
    finally:
        state.gauges.browser_opened(-1)
        metrics.socket_frames(socket.frames_in, socket.frames_out)


async def _run(
    state: ProxyState, socket: BrowserSocket, admitted: Admitted, metrics: Metrics
) -> None:
    """Run the admitted socket's session; the route's writer sends its last frames.

    A failure that is not a :class:`SessionError` is logged and ends the session with
    ``internal_error``. Whatever happens, the lease is given back and a resumable conversation
    kept (shielded, bounded).
    """
    config = state.config
    lease = admitted.lease
    grant = lease.grant
    resumed = resume.continued(grant)
    conversation_id = resumed.conversation_id if resumed else admitted.session_id
    time_limit = resumed.remaining_seconds if resumed else grant.session_time_limit
    # A native client is offered resumption (a handle) only when its setup asks for it.
    resumable = config.resume_window_seconds and (admitted.native is None or admitted.resumption)
    resume_token = secrets.token_urlsafe(32) if resumable else None
    queue = BrowserQueue(config.browser_queue_bytes)
    operator_ends = trio.Event()
    guard = None
    if state.budgets is not None:
        guard = state.budgets.guard(
            grant.client,
            grant.claims,
            lambda: _used(state, session, carried, admitted.opened_at),
            None if admitted.native is not None else queue.put,
        )
    session = Session(
        socket,
        queue,
        state.services,
        time_limit=time_limit,
        resumed=resumed,
        resume_token=resume_token,
        tools=_session_tools(state, admitted, metrics),
        native=admitted.native,
        operator_ends=operator_ends,
        budget=guard,
    )
    counters = session.counters
    carried = counters.usage.totals()  # what a resumed conversation brought
    wall_started = usage_log.now()
    counters.on_setup = lambda: metrics.setup_completed(trio.current_time() - admitted.opened_at)
    reconnects = counters.reconnects  # a conversation resumed on this socket brings its own
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run_writer, socket)
        summary = partial(
            _live_summary, state, session, grant.client, conversation_id, carried, wall_started
        )
        state.leases.hold(lease, summary, operator_ends)
        state.gauges.session_started()
        metrics.session_started()
        log.info(
            "session %s started (limit %ss)%s",
            admitted.session_id,
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
            log.exception("session %s failed unexpectedly", admitted.session_id)
            outcome = SessionError("the proxy failed unexpectedly")
        finally:
            state.gauges.session_ended()
            metrics.session_closed()
            state.leases.release(lease.id)
            # Even when the session is cancelled (the browser gone): the place comes back, and
            # the conversation is kept for a new socket.
            with trio.move_on_after(STORE_TIMEOUT_SECONDS, shield=True):
                if guard is not None:
                    await guard.settle()
                await end_lease(state.store, lease)
                if resume_token is not None:
                    kept = session.resumable(outcome, conversation_id)
                    window = config.resume_window_seconds
                    await resume.keep(state.store, kept, resume_token, grant, window)
            used = usage_since(counters.usage.totals(), carried)
            model = _model(session)
            if model is not None:
                metrics.session_usage(model, used)
            if state.usage_log is not None or state.records is not None:
                ended = usage_log.now()
                record = usage_record(
                    session_id=admitted.session_id,
                    conversation_id=conversation_id,
                    client=client_hash(grant.client),
                    model=model,
                    started=wall_started,
                    ended=ended,
                    reason=None if outcome is None else outcome_code(outcome),
                    usage=used,
                    conversation=None if resumed is None else counters.usage.totals(),
                    prices=state.prices,
                )
                with trio.CancelScope(shield=True):
                    if state.usage_log is not None:
                        await state.usage_log.write(record)  # bounded
                    if state.records is not None:
                        await state.records.keep(record, ended)  # bounded
        assert outcome is not None
        _log_end(admitted.session_id, session, outcome, grant.client, used)
        if outcome == BUDGET_EXHAUSTED and guard is not None and state.budgets is not None:
            state.budgets.ended(guard)
        metrics.session_ended(outcome, counters.reconnects - reconnects)
        if admitted.native is not None:  # Gemini sends no last event: a close frame, its way
            queue.finish(None, *native_close(outcome))
        else:
            _finish(
                queue, session, outcome, usage_dict(counters.usage.totals(), model, state.prices)
            )


def _session_tools(state: ProxyState, admitted: Admitted, metrics: Metrics) -> SessionTools | None:
    """The server's tools bound to this session (None when the server has none): the client is
    the JWT's ``sub`` for a signed-in user, else a hash of the address."""
    if not state.tools.tools:
        return None
    grant = admitted.lease.grant
    claims = _claims(grant.claims)
    client = str(claims["sub"]) if "sub" in claims else client_hash(grant.client)
    context = ToolContext(admitted.session_id, client, claims)
    return SessionTools(state.tools, context, metrics)


def _claims(text: str | None) -> dict[str, Any]:
    """A grant's claims; none for a grant without, or whose stored text is not a JSON object
    (the store's reply is not trusted to be well formed)."""
    try:
        claims = orjson.loads(text) if text is not None else {}
    except orjson.JSONDecodeError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _live_summary(
    state: ProxyState,
    session: Session,
    client: str,
    conversation_id: str,
    carried: UsageTotals,
    started: float,
) -> dict[str, Any]:
    """What the operator sees of the live session now (its usage: this socket's so far)."""
    model = _model(session)
    used = usage_since(session.counters.usage.totals(), carried)
    return live_summary(
        client=client_hash(client),
        conversation_id=conversation_id,
        model=model,
        started=started,
        usage=usage_dict(used, model, state.prices),
    )


def _used(state: ProxyState, session: Session, carried: UsageTotals, opened_at: float) -> Used:
    """What a session's socket has used, by budget unit: wall seconds since it was admitted,
    tokens (the turns' ``totalTokenCount``), and with prices their cost (None: not priced)."""
    used = usage_since(session.counters.usage.totals(), carried)
    measured: dict[str, float | None] = {
        "minutes": trio.current_time() - opened_at,
        "tokens": float(used.total_tokens),
    }
    if state.prices is not None:
        model = _model(session)
        priced = state.prices.cost(model, used) if model is not None and used.tokens else 0.0
        measured[PRICES_CURRENCY] = priced
    return measured


def _model(session: Session) -> str | None:
    """The model the session's setup chose (None: no setup came)."""
    setup = session.relay.setup if session.relay is not None else None
    model = setup.get("model") if setup is not None else None
    return model if isinstance(model, str) else None


def _finish(queue: BrowserQueue, session: Session, outcome: Outcome, usage: dict[str, Any]) -> None:
    """Queue the session's last message and close code (the contract's endings table), its
    stats showing ``usage`` (the conversation's, with its cost when priced)."""
    stats = attrs.evolve(session.counters.snapshot(), usage=usage)
    if isinstance(outcome, SessionError):
        event = encode_error(ErrorEvent(outcome.code, outcome.message, stats))
        queue.finish(event, outcome.close_code, outcome.code, drop=isinstance(outcome, SlowClient))
    elif outcome.announced:
        end = encode_session_end(SessionEnd(outcome.reason, stats))
        queue.finish(end, outcome.close_code, outcome.reason)
    else:
        queue.finish(None, outcome.close_code)


def _log_end(
    session_id: str, session: Session, outcome: Outcome, client: str, used: UsageTotals
) -> None:
    """The ``session_ended`` line; its token and audio totals are this socket's (``used``)."""
    counters = session.counters
    reason = outcome_code(outcome)
    tokens = {
        f"tokens_{kind}": sum(by_modality.values()) for kind, by_modality in used.tokens.items()
    }
    log.info(
        "session %s ended after %.1fs: %s (messages=%d audio_in=%d reconnects=%d tokens=%d"
        " audio_in_seconds=%.3f audio_out_seconds=%.3f)",
        session_id,
        counters.elapsed(),
        reason,
        counters.message_count,
        counters.audio_chunks_sent,
        counters.reconnects,
        used.total_tokens,
        used.audio_in_seconds,
        used.audio_out_seconds,
        extra=fields(
            "session_ended",
            reason=reason,
            client=client_hash(client),
            seconds=round(counters.elapsed(), 3),
            messages=counters.message_count,
            audio_in=counters.audio_chunks_sent,
            reconnects=counters.reconnects,
            tokens=used.total_tokens,
            **tokens,
            audio_in_seconds=used.audio_in_seconds,
            audio_out_seconds=used.audio_out_seconds,
        ),
    )
    if isinstance(outcome, SessionError):
        level = logging.WARNING if outcome.code in UPSTREAM_ERRORS else logging.INFO
        log.log(level, "session %s error: %s", session_id, outcome.message)
