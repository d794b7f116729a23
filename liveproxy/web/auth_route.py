"""``POST /api/auth`` (and every path of ``AUTH_PATHS``): a session token, or why not.

The checks run in this order, each refusing with the error shape: the server draining (503
``shutting_down``); sign-in when configured (401 ``unauthorized``, 503 ``not_ready`` without
keys); the body (400 ``bad_request``; with ``BOT_CHECK``, 400 ``bot_check_required`` without a
bot token, unless it asks for a resume); the client's sign-in bucket, before anything else
touches the store or the bot check's verifier (429 ``rate_limited``: a resume, or a guess at
one, is a sign-in too); the bot check, for a new session (403 ``bot_check_failed``, 503
``bot_check_unavailable``: see :mod:`~liveproxy.web.bot_check`); the resume, when asked (404
``resume_not_found``); then the store's admission (429 ``too_many_sessions``, 503
``at_capacity``). The client's budgets are checked right after its sign-in bucket (429
``budget_exhausted``, 401 for a malformed ``liveproxy_budget`` claim: see
:mod:`~liveproxy.web.budgets`).

A resume refused after its conversation was taken puts it back, until its own expiry. The store
unreachable at any step is 503 ``state_unavailable``. In broker mode (``EPHEMERAL_UPSTREAM=google``)
an admitted ephemeral token is then minted at Google instead (:mod:`~liveproxy.web.broker`: 503
``upstream_unavailable``, 502 ``upstream_refused``).

``GET /api/usage`` (:data:`USAGE_PATH`) answers with the client's budgets, their use and what is
left, behind the same sign-in, origin and sign-in bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import orjson
from quart import Response, request
from quart_trio import QuartTrio

from liveproxy.config import BotCheckSettings, SignInSettings
from liveproxy.contract.codec import DecodeError, decode_auth_request
from liveproxy.contract.payloads import AuthRequest, AuthResponse
from liveproxy.store import (
    Conversation,
    Grant,
    Limits,
    Rate,
    Refused,
    StoreUnavailable,
    rate_limited,
)
from liveproxy.web import ephemeral, resume
from liveproxy.web.clients import client_ip
from liveproxy.web.responses import Refusal, json_response, state_unavailable
from liveproxy.web.state import ProxyState

if TYPE_CHECKING:
    from liveproxy.web.bot_check import BotCheck
    from liveproxy.web.broker import Broker

log = logging.getLogger("liveproxy")

#: Where a client reads its budgets' use.
USAGE_PATH = "/api/usage"


@attrs.frozen
class SignedIn:
    """Who signed in: the client for the limits (``sub:<hash>``) and the JWT's claims (JSON
    text, for the server's tools)."""

    client: str
    claims: str


#: The sign-in check: who signed in, for an ``Authorization`` header.
SignInCheck = Callable[[str | None], Awaitable[SignedIn]]


class AuthRoute:
    """The view answering ``POST`` on the auth paths (see the module's docstring)."""

    def __init__(self, state: ProxyState) -> None:
        config = state.config
        self._state = state
        self._config = config
        self._rate = Rate(*config.auth_rate_limit) if config.auth_rate_limit else None
        self._limits = Limits(
            token_ttl=config.token_ttl_seconds,
            max_sessions=config.max_sessions,
            per_client=config.max_sessions_per_client,
        )
        self._sign_in = sign_in_check(config.signin)
        self._bot_check = bot_check(config.bot_check)
        self._policies = (config, state.services.limits.setup_policy)  # for ephemeral tokens
        self._broker = broker(state)

    async def aclose(self) -> None:
        """Close the bot check's and the broker's HTTP clients, if any."""
        if self._bot_check is not None:
            await self._bot_check.aclose()
        if self._broker is not None:
            await self._broker.aclose()

    async def answer(self) -> Response:
        """The answer to the request being served."""
        try:
            return await self._answer()
        except Refusal as refusal:
            return refusal.response()

    async def _answer(self) -> Response:
        if self._state.draining:
            raise Refusal(503, "shutting_down", "the server is shutting down")
        signed_in = None
        if self._sign_in is not None:
            signed_in = await self._sign_in(request.headers.get("Authorization"))
        body = await _body()
        checked = self._bot_check is not None and body.resume is None
        if checked and body.bot_token is None:
            raise Refusal(
                400,
                "bot_check_required",
                "this server requires a bot check: send its token as recaptcha_token or bot_token",
            )
        client = signed_in.client if signed_in else self._client_address()
        claims = signed_in.claims if signed_in else None
        await self._take_sign_in(client)
        if self._state.budgets is not None:
            await self._state.budgets.check_sign_in(client, claims)
        origin = request.headers.get("Origin")
        if body.resume is None:
            if checked and body.bot_token is not None:
                await self._pass_bot_check(body.bot_token)
            grant = Grant(self._duration(body), origin=origin, client=client, claims=claims)
            return await self._admit(ephemeral.constrained_grant(body, grant, *self._policies))
        conversation, state = await resume.take(self._state.store, body.resume, origin, client)
        grant = Grant(
            state.time_limit, origin=origin, client=client, resume=conversation.state, claims=claims
        )
        return await self._admit(grant, (body.resume, conversation))

    async def usage(self) -> Response:
        """``GET /api/usage``: the client's budgets (``{"budgets": []}`` without any)."""
        try:
            if self._state.draining:
                raise Refusal(503, "shutting_down", "the server is shutting down")
            signed_in = None
            if self._sign_in is not None:
                signed_in = await self._sign_in(request.headers.get("Authorization"))
            client = signed_in.client if signed_in else self._client_address()
            await self._take_sign_in(client)
            budgets = self._state.budgets
            if budgets is None:
                return json_response({"budgets": []})
            claims = signed_in.claims if signed_in else None
            return json_response(await budgets.view(client, claims))
        except Refusal as refusal:
            return refusal.response()

    def _duration(self, body: AuthRequest) -> int:
        config = self._config
        if body.session_duration is None:
            return config.session_time_limit
        return min(
            max(body.session_duration, config.session_min_seconds), config.session_max_seconds
        )

    def _client_address(self) -> str:
        peer = request.scope.get("client")
        return client_ip(
            peer[0] if peer else None,
            request.headers.getlist("X-Forwarded-For"),
            self._config.trusted_proxies,
        )

    async def _pass_bot_check(self, token: str) -> None:
        """Raises: Refusal: 403 ``bot_check_failed``, 503 ``bot_check_unavailable``."""
        from liveproxy.web.bot_check import (
            BotCheckFailed,
            BotCheckUnavailable,
            expected_hostnames,
        )

        assert self._bot_check is not None
        hostnames = expected_hostnames(
            self._config.bot_check, self._config.allowed_origins, request.headers.get("Host")
        )
        try:
            await self._bot_check.verify(
                token,
                hostnames=hostnames,
                remote_ip=self._client_address(),
                user_agent=request.headers.get("User-Agent"),
            )
        except BotCheckUnavailable as exc:
            log.warning("bot check unavailable: %s: no token issued", exc.message)
            raise Refusal(
                503, "bot_check_unavailable", f"the bot check is unavailable: {exc}"
            ) from None
        except BotCheckFailed as exc:
            log.info("bot check failed: %s", exc)
            raise Refusal(403, "bot_check_failed", f"the bot check failed: {exc}") from None

    async def _take_sign_in(self, client: str) -> None:
        """Spend one of the client's sign-ins. Raises: Refusal: 429 ``rate_limited``."""
        if self._rate is None:
            return
        try:
            wait = await self._state.store.take_sign_in(client, self._rate)
        except StoreUnavailable:
            log.warning("state store unreachable: no token issued")
            raise state_unavailable() from None
        if wait:
            refused = rate_limited(wait)
            raise Refusal(refused.status, refused.code, refused.message, refused.retry_after)

    async def _admit(
        self, grant: Grant, resumed: tuple[str, Conversation] | None = None
    ) -> Response:
        """A token for ``grant``, or the store's refusal (a ``resumed`` conversation, taken
        under its token, is then put back)."""
        store = self._state.store
        try:
            admitted = await store.admit(grant, self._limits)
        except StoreUnavailable:
            log.warning("state store unreachable: no token issued")
            raise state_unavailable() from None
        if isinstance(admitted, Refused):
            if resumed is not None:  # it stays resumable, as long as it would have
                await resume.put_back(store, *resumed)
            raise Refusal(admitted.status, admitted.code, admitted.message, admitted.retry_after)
        log.debug("token issued")
        if grant.ephemeral is not None and self._broker is not None:
            return await self._broker.mint(grant)  # Google's token, not this one
        if grant.ephemeral is not None:
            return ephemeral.ephemeral_answer(admitted, grant, self._limits.token_ttl)
        limit = grant.session_time_limit
        return json_response(AuthResponse(session_token=admitted, session_time_limit=limit))


async def _body() -> AuthRequest:
    """The request's body. Raises: Refusal: 400 ``bad_request``."""
    raw = await request.get_data()
    try:
        return decode_auth_request(raw.encode() if isinstance(raw, str) else raw)
    except DecodeError as exc:
        raise Refusal(400, "bad_request", str(exc)) from None


def sign_in_check(settings: SignInSettings) -> SignInCheck | None:
    """The sign-in check, or None when sign-in is off (PyJWT and cryptography, about 9 MiB of
    memory, are then never imported).

    The check returns who signed in (a hash of the JWT's ``sub``, and its claims), or raises
    the refusal: 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``, 503 ``not_ready`` without
    signing keys.
    """
    if not settings.enabled:
        return None
    from liveproxy.web.signin import KeysUnavailable, SignIn, Unauthorized, identity_hash

    signin = SignIn(settings)

    async def check(authorization: str | None) -> SignedIn:
        try:
            claims = await signin.claims(authorization)
        except KeysUnavailable as exc:
            raise Refusal(503, "not_ready", exc.message) from None
        except Unauthorized as exc:
            headers = (("WWW-Authenticate", "Bearer"),)
            raise Refusal(401, exc.code, exc.message, headers=headers) from None
        return SignedIn(f"sub:{identity_hash(claims['sub'])}", orjson.dumps(claims).decode())

    return check


def bot_check(settings: BotCheckSettings) -> BotCheck | None:
    """The bot check, or None when ``BOT_CHECK`` is off (httpx is then not imported here)."""
    if not settings.enabled:
        return None
    from liveproxy.web.bot_check import BotCheck

    return BotCheck(settings)


def broker(state: ProxyState) -> Broker | None:
    """Broker mode's minting (``EPHEMERAL_UPSTREAM=google``), or None (httpx is then not
    imported here)."""
    if state.config.ephemeral_upstream != "google":
        return None
    from liveproxy.web.broker import Broker

    return Broker(state)


def add_auth_routes(app: QuartTrio, state: ProxyState) -> None:
    """Serve the sign-in route at every path of ``AUTH_PATHS``; its bot check's and broker's
    clients are closed when serving ends."""
    route = AuthRoute(state)
    view = route.answer  # a coroutine function, as Quart wants a view
    for path in state.config.auth_paths:
        app.add_url_rule(path, f"auth {path}", view, methods=["POST"])
    app.add_url_rule(USAGE_PATH, "usage", route.usage, methods=["GET"])

    @app.after_serving
    async def close_bot_check() -> None:
        await route.aclose()
