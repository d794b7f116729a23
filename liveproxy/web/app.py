"""The app, assembled: its state, its routes, the ASGI middleware around them, the upstream it
resolves at start-up and the leases it renews.

From the outside in: ``/ws`` (:class:`~liveproxy.web.ws_route.SessionRoute`), the auth route's
results (:class:`~liveproxy.web.metrics.TokenResults`, with ``METRICS_BIND``), origins and
CORS (:class:`~liveproxy.web.origins.Cors`), bounded request bodies
(:class:`~liveproxy.web.request_body.BoundedBodies`), then Quart: the sign-in route
(:mod:`~liveproxy.web.auth_route`) and the plain ones (:mod:`~liveproxy.web.routes`).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio
from quart_trio import QuartTrio

from liveproxy.config import Config
from liveproxy.core.prices import read_prices
from liveproxy.core.services import SessionLimits, SessionServices
from liveproxy.core.stats import Gauges
from liveproxy.redact import SECRETS
from liveproxy.store import StateStore
from liveproxy.store.memory import MemoryStore
from liveproxy.tools import ToolRegistry, load_tools
from liveproxy.upstream.connection import GeminiUpstream
from liveproxy.upstream.startup import SharedEmulator, resolve_target
from liveproxy.upstream.target import UpstreamTarget
from liveproxy.web.auth_route import USAGE_PATH, add_auth_routes
from liveproxy.web.budgets import Budgets
from liveproxy.web.leases import LeaseKeeper
from liveproxy.web.metrics import NO_METRICS, Metrics, TokenResults
from liveproxy.web.operator_records import RecordKeeper
from liveproxy.web.origins import Cors, OriginPolicy
from liveproxy.web.request_body import BoundedBodies
from liveproxy.web.routes import add_routes
from liveproxy.web.state import ProxyState
from liveproxy.web.usage_log import UsageLog
from liveproxy.web.ws_route import SessionRoute

#: The largest request body read (``POST /api/auth`` takes a few bytes of JSON, or an
#: ephemeral token's constraints: a setup of up to 16 KiB).
MAX_BODY_BYTES = 20 * 1024


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
    tools: ToolRegistry | None = None,
) -> LiveProxyApp:
    """Build the app for ``config`` (default: from the environment) on ``store`` (default: a
    :class:`MemoryStore`; :func:`~liveproxy.store.opening.open_store` opens the others).

    Without ``target`` the upstream is resolved when serving starts: the Developer API with the
    key, Vertex AI with Application Default Credentials, or, with no credentials, the built-in
    Gemini Live emulator: ``emulator`` when given (a supervisor's, shared by its workers),
    else one started in the app's own nursery. ``metrics`` counts sessions, sockets and the
    auth route's answers (see :mod:`liveproxy.web.metrics`). ``tools`` (default: loaded from
    ``TOOLS_MODULES``, the ``liveproxy.tools`` entry points and ``TOOLS_FILE``) are declared in
    every session's setup and run by the server; their HTTP client is closed when serving ends.

    Raises:
        ToolLoadError: a configured tool cannot be loaded (the server must not start).
        PricesError: ``PRICES_FILE`` cannot be read or is not a price table.
    """
    config = config or Config.from_env()
    SECRETS.add(
        config.api_key, config.signin.jwt_secret, config.bot_check.secret, config.admin_token
    )
    app = LiveProxyApp(__name__, static_folder=None)
    store = store or MemoryStore(trio.current_time, config.session_lease_seconds)
    gauges = Gauges()
    if tools is None:
        tools = load_tools(
            modules=config.tools_modules,
            tools_file=config.tools_file,
            selected=config.server_tools,
            threads=config.tool_threads,
        )
    limits = SessionLimits.from_config(config)
    setup_policy = attrs.evolve(limits.setup_policy, tool_declarations=tuple(tools.declarations()))
    state = ProxyState(
        config=config,
        store=store,
        tools=tools,
        services=SessionServices(
            limits=attrs.evolve(limits, setup_policy=setup_policy),
            upstream=None if target is None else GeminiUpstream(target, gauges.upstream_opened),
            gauges=gauges,
            shutdown_now=trio.Event(),
        ),
        leases=LeaseKeeper(store, config.session_lease_seconds),
        usage_log=None if config.usage_log is None else UsageLog(config.usage_log),
        prices=read_prices(config.prices_file),
        records=(
            RecordKeeper(store, config.usage_retention_days)
            if config.usage_records_in_store
            else None
        ),
        budgets=Budgets(config, store, metrics.budget_refused),
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
        await tools.aclose()

    add_auth_routes(app, state)
    add_routes(app, state)
    bounded = BoundedBodies(
        app.asgi_app, limit=MAX_BODY_BYTES, timeout=config.request_body_timeout_seconds
    )
    policy = OriginPolicy.from_config(config)
    http: Any = Cors(bounded, policy, frozenset((*config.auth_paths, USAGE_PATH)))
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
