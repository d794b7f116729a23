"""Broker mode (``EPHEMERAL_UPSTREAM=google``): ``POST /api/auth {"ephemeral": {...}}`` mints a
real Google token, and the browser connects to Google itself.

After every rule of the auth route (origin, sign-in, bot check, rate, admission), the server
asks Google's ``POST /v1alpha/auth_tokens`` with its API key for a token with the same
constraints, as the Python SDK's ``auth_tokens.create`` would send them
(:func:`google_request`), and answers like liveproxy's own tokens: ``{"name", "expireTime",
"newSessionExpireTime", "session_time_limit"}``, the name Google's. Google's REST base follows
the configured upstream (``UPSTREAM_URL``'s host, or the built-in emulator's); with the API key
in the ``x-goog-api-key`` header, never in a URL or a log line.

Refusals: no upstream (``simple`` mode), Google unreachable, not done within
:data:`MINT_TIMEOUT_SECONDS` (connecting, sending, the whole answer) or answering 429 or 5xx:
503 ``upstream_unavailable``. Google refusing (another 4xx: a wrong key, a setup it rejects)
or answering what is not a token (not JSON, no ``name``, over :data:`MAX_ANSWER_BYTES`): 502
``upstream_refused``, with Google's status and message.
"""

from __future__ import annotations

import logging
import re
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpcore  # noqa: F401  # httpx imports it at its first request: here, at start
import httpx
import orjson
import trio
from quart import Response

from liveproxy.config import Config
from liveproxy.contract.native import read_constraints
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.contract.session_setup import TRANSCRIPTION_FLAGS, object_shortcut_expanded
from liveproxy.protocol.locks import field_mask_paths, two_levels_camel
from liveproxy.redact import SECRETS
from liveproxy.store import Grant
from liveproxy.upstream.connection import GeminiUpstream
from liveproxy.web.responses import Refusal, json_response
from liveproxy.web.state import ProxyState

log = logging.getLogger("liveproxy.broker")

MINT_PATH: Final = "/v1alpha/auth_tokens"
#: How long Google may take to mint a token, all in.
MINT_TIMEOUT_SECONDS: Final = 10.0
#: The largest answer read from Google (a token's answer is ~100 bytes).
MAX_ANSWER_BYTES: Final = 64 * 1024
#: The most of Google's error message passed on.
MAX_MESSAGE_CHARS: Final = 300
_NAME = re.compile(r"auth_tokens/[A-Za-z0-9._~-]{1,512}")


def rest_base(live_url: str) -> str:
    """Google's REST base for a Live WebSocket URL: same host and port, ``http(s)://``."""
    scheme, _, rest = live_url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{'http' if scheme == 'ws' else 'https'}://{host}"


def google_setup(config: dict[str, Any]) -> dict[str, Any]:
    """An ``ephemeral.config`` as a Gemini setup: the browser shortcuts expanded (transcription
    flags, one tool object, a plain-text system instruction), two levels in camelCase."""
    setup: dict[str, Any] = {}
    for key, value in two_levels_camel(config).items():
        if key in TRANSCRIPTION_FLAGS and isinstance(value, bool):
            if value:
                setup[key] = {}
            continue
        setup[key] = object_shortcut_expanded(key, value)
    return setup


def google_request(
    request: EphemeralRequest, server_model: str, new_session_until: datetime, until: datetime
) -> dict[str, Any]:
    """The body of ``POST /v1alpha/auth_tokens`` for ``request``, as the SDK writes it.

    The model is always locked: the token's, else the server's ``MODEL`` (a browser must not
    pick another with the server's key). With a ``config`` and no ``lock_additional_fields``
    there is no ``fieldMask``: the whole setup is locked; with ``lock_additional_fields`` the
    SDK's mask (the config's fields and the names); with no ``config`` only ``model`` is
    locked, so the browser's setup is used as it is, as with liveproxy's own tokens.
    """
    model = request.model or server_model
    setup: dict[str, Any] = {} if request.config is None else google_setup(request.config)
    setup["model"] = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    body: dict[str, Any] = {
        "uses": request.uses,
        "expireTime": rfc3339(until),
        "newSessionExpireTime": rfc3339(new_session_until),
        "bidiGenerateContentSetup": setup,
    }
    if request.config is None:
        body["fieldMask"] = "model"
    elif request.lock_additional_fields is not None:
        body["fieldMask"] = ",".join(field_mask_paths(setup, request.lock_additional_fields))
    return body


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Broker:
    """Mints Google's tokens for the auth route, over one HTTP client (closed by
    :meth:`aclose`)."""

    def __init__(self, state: ProxyState) -> None:
        self._state = state
        self._config: Config = state.config
        # Trusted CAs of the system, loaded now (at start), not mid-sign-in; no redirects.
        self._client = httpx.AsyncClient(verify=ssl.create_default_context(), timeout=None)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def mint(self, grant: Grant) -> Response:
        """Google's token for ``grant`` (an ephemeral grant), as the auth route's answer.

        Raises:
            Refusal: 503 ``upstream_unavailable``, 502 ``upstream_refused`` (see the module).
        """
        assert grant.ephemeral is not None
        upstream = self._state.services.upstream
        if not isinstance(upstream, GeminiUpstream):
            raise Refusal(503, "upstream_unavailable", "no upstream is configured")
        target = upstream.target
        now = datetime.now(UTC)
        new_session_until = now + timedelta(seconds=self._config.token_ttl_seconds)
        until = new_session_until + timedelta(seconds=grant.session_time_limit)
        body = google_request(
            read_constraints(grant.ephemeral), self._config.model, new_session_until, until
        )
        headers = {
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        }
        for raw_name, raw_value in await target.credentials.headers():
            headers[raw_name.decode("latin-1")] = raw_value.decode("latin-1")
        url = rest_base(target.url) + MINT_PATH
        with trio.move_on_after(MINT_TIMEOUT_SECONDS):
            status, answer = await self._post(url, orjson.dumps(body), headers)
            name = _token_name(status, answer)
            log.debug("Google minted an ephemeral token")
            return json_response(
                {
                    "name": name,
                    "expireTime": rfc3339(until),
                    "newSessionExpireTime": rfc3339(new_session_until),
                    "session_time_limit": grant.session_time_limit,
                }
            )
        log.warning("Google's token service did not answer within %g s", MINT_TIMEOUT_SECONDS)
        raise Refusal(
            503,
            "upstream_unavailable",
            f"Google's token service did not answer within {MINT_TIMEOUT_SECONDS:g} s",
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Google's status and answer (at most :data:`MAX_ANSWER_BYTES`, as sent).

        Raises:
            Refusal: 503 unreachable, 502 an answer over the bound.
        """
        request = self._client.build_request("POST", url, content=body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
            try:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():  # nothing inflated past the bound
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise Refusal(
                            502,
                            "upstream_refused",
                            f"Google's answer is over {MAX_ANSWER_BYTES} bytes",
                        )
                    chunks.append(chunk)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:  # its text may name the URL: only its kind is shown
            log.warning("Google's token service unreachable (%s)", type(exc).__name__)
            raise Refusal(
                503,
                "upstream_unavailable",
                f"Google's token service could not be reached ({type(exc).__name__})",
            ) from None
        return response.status_code, b"".join(chunks)


def _token_name(status: int, answer: bytes) -> str:
    """The token's name in Google's answer.

    Raises:
        Refusal: 503 for 429 and 5xx, 502 for another refusal or an answer with no token.
    """
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        data = None
    if not 200 <= status < 300:
        said = _google_error(data)
        log.warning("Google refused to mint a token: HTTP %d %s", status, said)
        if status == 429 or status >= 500:
            raise Refusal(
                503, "upstream_unavailable", f"Google's token service answered {status}{said}"
            )
        raise Refusal(502, "upstream_refused", f"Google refused the token: {status}{said}")
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise Refusal(502, "upstream_refused", "Google's answer has no token name")
    return name


def _google_error(data: Any) -> str:
    """`` STATUS: message`` from Google's error body, bounded and without secrets, or ``""``."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ""
    status, message = error.get("status"), error.get("message")
    parts = [
        status[:40] if isinstance(status, str) else "",
        message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else "",
    ]
    shown = ": ".join(p for p in parts if p)
    return f" {SECRETS.redact(shown)}" if shown else ""
