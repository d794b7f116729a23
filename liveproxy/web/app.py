"""The Quart-trio app: HTTP endpoints, the demo page, the upstream it resolves at start-up.

The ``/ws`` route is :class:`~liveproxy.web.ws_route.SessionRoute`, which wraps Quart's ASGI app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from liveproxy.config import Config, SignInSettings
from liveproxy.contract.codec import (
    DecodeError,
    decode_auth_request,
    to_json,
)
from liveproxy.contract.payloads import (
    ApiError,
    AuthResponse,
    ErrorResponse,
    Health,
    Status,
)
from liveproxy.core.resumable import Resumable
from liveproxy.core.services import SessionLimits, SessionServices
from liveproxy.core.stats import Gauges
from liveproxy.protocol.schema import shown
from liveproxy.redact import SECRETS
from liveproxy.store import (
    Conversation,
    Grant,
    Limits,
    Rate,
    Refused,
    StateStore,
    StoreUnavailable,
    rate_limited,
)
from liveproxy.store.memory import MemoryStore
from liveproxy.upstream.connection import GeminiUpstream
from liveproxy.upstream.startup import SharedEmulator, resolve_target
from liveproxy.upstream.target import UpstreamTarget
from liveproxy.web.clients import client_ip
from liveproxy.web.leases import LeaseKeeper
from liveproxy.web.metrics import NO_METRICS, Metrics, TokenResults
from liveproxy.web.origins import Cors, OriginPolicy
from liveproxy.web.request_body import BoundedBodies
from liveproxy.web.state import ProxyState
from liveproxy.web.ws_route import SessionRoute, resume_client

log = logging.getLogger("liveproxy")

STATIC_DIR = Path(__file__).parent.parent / "static"
#: How long a readiness probe waits for the state store.
READY_TIMEOUT_SECONDS = 2.0
#: The largest request body read (``POST /api/auth`` takes a few bytes of JSON).
MAX_BODY_BYTES = 4096


class LiveProxyApp(QuartTrio):
    proxy: ProxyState
    metrics: Metrics


def create_app(
    config: Config | None = None,
    *,
    target: UpstreamTarget | None = None,
    store: StateStore | None = None,
    emulator: SharedEmulator | None = None,
    metrics: Metrics = NO_METRICS,
) -> LiveProxyApp:
    """Build the app for ``config`` (default: from the environment) on ``store`` (default: a
    :class:`MemoryStore`; :func:`~liveproxy.store.opening.open_store` opens the others).

    Without ``target`` the upstream is resolved when serving starts: the Developer API with the
    key, Vertex AI with Application Default Credentials, or, with no credentials, the built-in
    Gemini Live emulator: ``emulator`` when given (a supervisor's, shared by its workers),
    else one started in the app's own nursery. ``metrics`` counts sessions, sockets and the
    auth route's answers (see :mod:`liveproxy.web.metrics`).
    """
    config = config or Config.from_env()
    SECRETS.add(config.api_key, config.signin.jwt_secret)
    app = LiveProxyApp(__name__, static_folder=None)
    store = store or MemoryStore(trio.current_time, config.session_lease_seconds)
    gauges = Gauges()
    state = ProxyState(
        config=config,
        store=store,
        services=SessionServices(
            limits=SessionLimits.from_config(config),
            upstream=None if target is None else GeminiUpstream(target, gauges.upstream_opened),
            gauges=gauges,
            shutdown_now=trio.Event(),
        ),
        leases=LeaseKeeper(store, config.session_lease_seconds),
    )
    app.proxy = state
    app.metrics = metrics

    renewals = trio.CancelScope()

    @app.before_serving
    async def renew_leases() -> None:
        async def run() -> None:
            with renewals:
                await state.leases.run()

        app.nursery.start_soon(run)

    @app.after_serving
    async def stop_renewing() -> None:
        renewals.cancel()

    _add_http_routes(app, state)
    bounded = BoundedBodies(
        app.asgi_app, limit=MAX_BODY_BYTES, timeout=config.request_body_timeout_seconds
    )
    policy = OriginPolicy.from_config(config)
    http: Any = Cors(bounded, policy, frozenset(config.auth_paths))
    if metrics is not NO_METRICS:
        http = TokenResults(http, frozenset(config.auth_paths), metrics.token_result)
    app.asgi_app = SessionRoute(http, state, policy, metrics)  # type: ignore[method-assign,assignment]
    if target is None:
        _resolve_upstream_on_start(app, state, emulator)
    return app


def _resolve_upstream_on_start(
    app: LiveProxyApp, state: ProxyState, shared: SharedEmulator | None
) -> None:
    emulator_scope = trio.CancelScope()

    @app.before_serving
    async def resolve_upstream() -> None:
        target = await resolve_target(state.config, app.nursery, shared, emulator_scope)
        if target is not None:
            state.services.upstream = GeminiUpstream(target, state.gauges.upstream_opened)

    @app.after_serving
    async def stop_emulator() -> None:
        emulator_scope.cancel()


def _json(body: Any, status: int = 200) -> Response:
    return Response(to_json(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json(ErrorResponse(ApiError(code, message)), status)


def _add_http_routes(app: LiveProxyApp, state: ProxyState) -> None:
    config = state.config

    rate = Rate(*config.auth_rate_limit) if config.auth_rate_limit else None
    limits = Limits(
        token_ttl=config.token_ttl_seconds,
        max_sessions=config.max_sessions,
        per_client=config.max_sessions_per_client,
    )

    sign_in = _sign_in(config.signin)

    async def auth() -> Response:
        if state.draining:
            return _error(503, "shutting_down", "the server is shutting down")
        identity: str | None = None
        if sign_in is not None:
            checked = await sign_in(request.headers.get("Authorization"))
            if isinstance(checked, Response):
                return checked
            identity = checked
        raw = await request.get_data()
        try:
            body = decode_auth_request(raw.encode() if isinstance(raw, str) else raw)
        except DecodeError as exc:
            return _error(400, "bad_request", str(exc))
        duration = config.session_time_limit
        if body.session_duration is not None:
            duration = min(
                max(body.session_duration, config.session_min_seconds), config.session_max_seconds
            )
        peer = request.scope.get("client")
        client = client_ip(
            peer[0] if peer else None,
            request.headers.getlist("X-Forwarded-For"),
            config.trusted_proxies,
        )
        if identity is not None:  # signed in: the JWT's subject (hashed) is the client
            client = identity
        if rate is not None:  # first: a resume (or a guess at one) is a sign-in too
            try:
                wait = await state.store.take_sign_in(client, rate)
            except StoreUnavailable:
                log.warning("state store unreachable: no token issued")
                return _error(503, "state_unavailable", "the state store is unreachable")
            if wait:
                refused = rate_limited(wait)
                response = _error(refused.status, refused.code, refused.message)
                response.headers["Retry-After"] = str(refused.retry_after)
                return response
        origin = request.headers.get("Origin")
        grant = Grant(duration, origin=origin, client=client)
        resumed: Conversation | None = None
        if body.resume is not None:
            try:
                resumed = await state.store.take_conversation(
                    body.resume, origin, resume_client(client)
                )
            except StoreUnavailable:
                log.warning("state store unreachable: no conversation resumed")
                return _error(503, "state_unavailable", "the state store is unreachable")
            remaining = _time_left(resumed)
            if resumed is None or remaining is None:
                return _error(
                    404,
                    "resume_not_found",
                    "no conversation to resume for this token (unknown, used or expired)",
                )
            duration = remaining
            grant = Grant(duration, origin=origin, client=client, resume=resumed.state)
        try:
            admitted = await state.store.admit(grant, limits)
        except StoreUnavailable:
            log.warning("state store unreachable: no token issued")
            return _error(503, "state_unavailable", "the state store is unreachable")
        if isinstance(admitted, Refused):
            if resumed is not None and body.resume is not None:  # it stays resumable, as long
                await return_conversation(state, body.resume, resumed)
            response = _error(admitted.status, admitted.code, admitted.message)
            if admitted.retry_after is not None:
                response.headers["Retry-After"] = str(admitted.retry_after)
            return response
        log.debug("token issued")
        return _json(AuthResponse(session_token=admitted, session_time_limit=duration))

    for path in config.auth_paths:
        app.add_url_rule(path, f"auth {path}", auth, methods=["POST"])

    @app.get("/api/health")
    async def health() -> Response:
        return _json(Health(model=config.model))

    @app.get("/api/ready")
    async def ready() -> Response:
        if state.draining:
            return _error(503, "not_ready", "draining")
        if state.services.upstream is None:  # "simple" mode: every session would fail
            return _error(503, "not_ready", "no upstream configured")
        if state.gauges.live_sessions >= config.max_sessions:
            return _error(503, "not_ready", "at capacity")
        try:
            with trio.fail_after(READY_TIMEOUT_SECONDS):
                usage = await state.store.usage()
        except (StoreUnavailable, trio.TooSlowError):
            return _error(503, "not_ready", "state store unreachable")
        if usage.tokens + usage.sessions >= config.max_sessions:
            return _error(503, "not_ready", "at capacity")
        return _json({"status": "ready"})

    @app.get("/api/status")
    async def status() -> Response:
        return _json(Status(mode=config.mode, missing=config.missing))

    @app.get("/")
    async def index() -> Response:
        return await _static("index.html")

    @app.get("/static/<path:name>")
    async def static(name: str) -> Response:
        return await _static(name)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, code, exc.description or code)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("request failed", exc_info=exc)
        return _error(500, "internal_error", "the server failed to answer this request")


async def return_conversation(state: ProxyState, token: str, conversation: Conversation) -> None:
    """Put back a conversation taken for a resume that was refused, until its own expiry."""
    try:
        await state.store.return_conversation(token, conversation)
    except StoreUnavailable:
        log.warning("state store unreachable: a refused resume's conversation is lost")


def _time_left(conversation: Conversation | None) -> int | None:
    """The time limit a taken conversation's new socket gets (None: not a readable state)."""
    if conversation is None:
        return None
    try:
        return Resumable.from_json(conversation.state).time_limit
    except ValueError:
        log.warning("a kept conversation's state is unreadable: it cannot be resumed")
        return None


def _sign_in(settings: SignInSettings) -> Callable[[str | None], Awaitable[str | Response]] | None:
    """The sign-in check, or None when sign-in is off (PyJWT and cryptography, about 9 MiB of
    memory, are then never imported).

    The check returns the client's identity (a hash of the JWT's ``sub``), or the refusal: 401
    ``unauthorized`` with ``WWW-Authenticate: Bearer``, 503 ``not_ready`` without signing keys.
    """
    if not settings.enabled:
        return None
    from liveproxy.web.signin import KeysUnavailable, SignIn, Unauthorized, identity_hash

    signin = SignIn(settings)

    async def check(authorization: str | None) -> str | Response:
        try:
            subject = await signin.verify(authorization)
        except KeysUnavailable as exc:
            return _error(503, "not_ready", exc.message)
        except Unauthorized as exc:
            response = _error(401, exc.code, exc.message)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return f"sub:{identity_hash(subject)}"

    return check


async def _static(name: str) -> Response:
    try:
        path = (STATIC_DIR / name).resolve()
        found = STATIC_DIR.resolve() in path.parents and path.is_file()
    except (ValueError, OSError):  # a NUL in the name, a name too long for the OS
        found = False
    if not found:
        return _error(404, "not_found", f"no such file: {shown(name)}")
    content_type = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".png": "image/png",
        ".svg": "image/svg+xml",
        ".wav": "audio/wav",
    }.get(path.suffix, "application/octet-stream")
    data = await trio.Path(path).read_bytes()
    return Response(data, content_type=content_type, headers={"Cache-Control": "no-cache"})
