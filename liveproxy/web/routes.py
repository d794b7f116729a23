"""The plain HTTP routes: health, readiness, status, the demo page, and every error's shape."""

from __future__ import annotations

import logging
from pathlib import Path

import trio
from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from liveproxy.config import Config
from liveproxy.contract.payloads import BotCheckInfo, Health, ModelInfo, Status
from liveproxy.protocol.live_models import Backend, model_id, rules_for
from liveproxy.protocol.schema import shown
from liveproxy.store import StoreUnavailable
from liveproxy.web.responses import error_response, json_response
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy")

STATIC_DIR = Path(__file__).parent.parent / "static"
#: How long a readiness probe waits for the state store.
READY_TIMEOUT_SECONDS = 2.0
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".wav": "audio/wav",
}


def add_routes(app: QuartTrio, state: ProxyState) -> None:
    """``/api/health``, ``/api/ready``, ``/api/status``, ``/`` and ``/static/...``; every
    error (404, 405, an exception) in the error shape."""
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

    @app.get("/")
    async def index() -> Response:
        return await _static("index.html")

    @app.get("/static/<path:name>")
    async def static(name: str) -> Response:
        return await _static(name)

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


async def _static(name: str) -> Response:
    try:
        path = (STATIC_DIR / name).resolve()
        found = STATIC_DIR.resolve() in path.parents and path.is_file()
    except (ValueError, OSError):  # a NUL in the name, a name too long for the OS
        found = False
    if not found:
        return error_response(404, "not_found", f"no such file: {shown(name)}")
    content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    data = await trio.Path(path).read_bytes()
    return Response(data, content_type=content_type, headers={"Cache-Control": "no-cache"})
