"""The plain HTTP routes: health, readiness, status, the app's front end (``STATIC_DIR``), the
demo page, and every error's shape."""

from __future__ import annotations

import logging
from pathlib import Path

import trio
from quart import Response, redirect, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from liveproxy.config import Config
from liveproxy.contract.payloads import BotCheckInfo, Health, ModelInfo, Status
from liveproxy.protocol.live_models import Backend, model_id, rules_for
from liveproxy.store import StoreUnavailable
from liveproxy.web.responses import error_response, json_response
from liveproxy.web.state import ProxyState
from liveproxy.web.static_files import StaticFiles

log = logging.getLogger("liveproxy")

#: The demo page's files, served at ``/demo/``.
DEMO_DIR = Path(__file__).parent.parent / "static"
#: How long a readiness probe waits for the state store.
READY_TIMEOUT_SECONDS = 2.0


def add_routes(app: QuartTrio, state: ProxyState) -> None:
    """``/api/health``, ``/api/ready``, ``/api/status``, the app (``STATIC_DIR``) or a redirect
    to the demo page at ``/``, the demo page at ``/demo/``; every error (404, 405, an
    exception) in the error shape."""
    config = state.config
    models = status_models(config)
    bot = config.bot_check
    bot_check = None if bot.provider is None else BotCheckInfo(bot.provider, bot.site_key)

    @app.get("/api/health")
    async def health() -> Response:
        return json_response(Health(model=config.model))

    @app.get("/api/ready")
    async def ready() -> Response:
        if state.draining:
            return error_response(503, "not_ready", "draining")
        if state.services.upstream is None:  # "simple" mode: every session would fail
            return error_response(503, "not_ready", "no upstream configured")
        if state.gauges.live_sessions >= config.max_sessions:
            return error_response(503, "not_ready", "at capacity")
        try:
            with trio.fail_after(READY_TIMEOUT_SECONDS):
                usage = await state.store.usage()
        except (StoreUnavailable, trio.TooSlowError):
            return error_response(503, "not_ready", "state store unreachable")
        if usage.tokens + usage.sessions >= config.max_sessions:
            return error_response(503, "not_ready", "at capacity")
        return json_response({"status": "ready"})

    @app.get("/api/status")
    async def status() -> Response:
        return json_response(
            Status(mode=config.mode, missing=config.missing, models=models, bot_check=bot_check)
        )

    add_demo_routes(app)
    if config.static_dir is None:

        @app.get("/")
        async def index() -> Response:
            return _relative_redirect("demo/")

    else:
        add_app_routes(app, config)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or code)

    @app.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("request failed", exc_info=exc)
        return error_response(500, "internal_error", "the server failed to answer this request")


def status_models(config: Config) -> list[ModelInfo]:
    """The models a browser may ask for: the server's ``MODEL`` (the default), then each of
    ``ALLOWED_MODELS`` (sorted; the default is not listed twice), with the rules the page
    needs to build a setup the model accepts."""
    default = model_id(config.model)
    others = sorted(name for name in config.allowed_models if model_id(name) != default)
    return [
        _model_info(name, config.backend, default=i == 0)
        for i, name in enumerate([config.model, *others])
    ]


def _model_info(name: str, backend: Backend, *, default: bool) -> ModelInfo:
    rules = rules_for(name, backend)
    if rules is None:  # not in the table: passed on unchecked, so nothing is known of it
        return ModelInfo(name, default, None, None, interaction_status=False)
    return ModelInfo(
        name,
        default,
        outputs=sorted(rules.outputs),
        thinking_levels=list(rules.thinking_levels) if rules.thinking else [],
        interaction_status=rules.interaction_status,
    )


def add_demo_routes(app: QuartTrio) -> None:
    """The demo page at ``/demo/`` (relative URLs: its files beside it, the API one level up)."""
    demo = StaticFiles(DEMO_DIR)

    @app.get("/demo")
    async def demo_slash() -> Response:
        return _relative_redirect("demo/")

    @app.get("/demo/")
    async def demo_page() -> Response:
        return await demo.serve("index.html")

    @app.get("/demo/<path:name>")
    async def demo_file(name: str) -> Response:
        return await demo.serve(name)


def add_app_routes(app: QuartTrio, config: Config) -> None:
    """The app of ``STATIC_DIR`` at ``/``: its files by path, its ``index.html`` for any other
    ``GET`` outside ``/api/``, the WebSocket paths and the auth paths (client-side routing)."""
    assert config.static_dir is not None
    site = StaticFiles(config.static_dir, fallback="index.html", app_cache=True)
    ours = ("/api", *config.ws_paths, *config.auth_paths)

    @app.get("/")
    async def app_index() -> Response:
        return await site.serve("index.html")

    @app.get("/<path:name>")
    async def app_file(name: str) -> Response:
        path = request.path.rstrip("/")
        if path in config.auth_paths:  # a POST route: the method is what is wrong
            raise MethodNotAllowed(valid_methods=["POST"])
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in ours):
            raise NotFound()
        return await site.serve(name)


def _relative_redirect(location: str) -> Response:
    """A 302 to ``location`` (relative, so it works under a path prefix), query kept."""
    query = request.query_string.decode("latin-1")
    return redirect(f"{location}?{query}" if query else location)  # type: ignore[return-value]
