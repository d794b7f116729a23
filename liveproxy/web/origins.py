"""Which web pages may use the proxy: the origin rule and CORS, below Quart (pure + ASGI).

``ALLOWED_ORIGINS`` unset allows the server's own origin (``http(s)://<Host>``) and loopback
origins on any port, so a local dev server works with no configuration; ``*`` allows any
origin (what the earlier servers did); otherwise exactly the listed origins. A request without
``Origin`` is not a browser's and is not subject to the rule.

The server's own origin is taken from the ``Host`` header, which a DNS rebinding controls: a
page on ``http://evil.example:8000`` whose name the attacker then points at 127.0.0.1 reaches
a developer's server with ``Host: evil.example:8000`` and a matching ``Origin``. So a ``Host``
that is a DNS name is believed only when the server listens beyond loopback, or the request
came through a trusted proxy (``TRUSTED_PROXIES``, which passes the browser's ``Host`` on); a
server listening on loopback only (the default) otherwise owns only loopback names and IP
addresses, which no DNS answer can stand for.

:class:`Cors` answers preflights and adds ``Access-Control-Allow-Origin`` for allowed origins on
``/api/*`` and the auth paths; a disallowed origin's preflight, and its ``POST`` to an auth path,
get 403 with no CORS headers. ``/ws`` applies :meth:`OriginPolicy.allows` itself (4003).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from liveproxy.config import Config, IPNetwork
from liveproxy.contract.codec import to_json
from liveproxy.contract.payloads import ApiError, ErrorResponse
from liveproxy.web.asgi import ASGIMessage, Receive, Send, header
from liveproxy.web.clients import is_trusted

_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
PREFLIGHT_MAX_AGE: Final = 600
_PREFLIGHT_HEADERS: Final = (
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Authorization"),
    (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
)


@attrs.frozen
class OriginPolicy:
    """The origin rule. ``allowed`` None: own origin and loopback; containing ``*``: any.

    ``public``: the server listens beyond loopback; ``trusted_proxies``: the peers whose
    ``Host`` is a browser's (see the module's docstring).
    """

    allowed: frozenset[str] | None = None
    public: bool = False
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> OriginPolicy:
        return cls(config.allowed_origins, not _loopback_host(config.host), config.trusted_proxies)

    def allows(self, origin: str, host: str | None, peer: str | None = None) -> bool:
        """Whether a page of ``origin`` may use the proxy reached as ``host`` (the Host header)
        by a request from ``peer`` (the socket's address)."""
        if self.allowed is not None:
            return "*" in self.allowed or origin in self.allowed
        try:
            parts = urlsplit(origin)
            hostname = parts.hostname
        except ValueError:  # a malformed IPv6 literal: the header is the client's to forge
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc or hostname is None:
            return False  # "null" (sandboxed frames, files) and anything odd
        if _bracketed(hostname) in _LOOPBACK:
            return True
        if host is None or parts.netloc.lower() != host.lower():
            return False
        return self._own_name(hostname, peer)

    def allows_request(self, scope: ASGIMessage, origin: str) -> bool:
        """:meth:`allows` for an ASGI request (its Host and peer)."""
        client = scope.get("client")
        return self.allows(origin, header(scope, b"host"), client[0] if client else None)

    def _own_name(self, hostname: str, peer: str | None) -> bool:
        """Whether a Host of ``hostname`` can be believed to name this server."""
        if self.public or _is_address(hostname):
            return True
        return peer is not None and is_trusted(peer, self.trusted_proxies)


def _bracketed(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname


def _is_address(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _loopback_host(host: str) -> bool:
    """Whether listening on ``host`` (``HOST``) reaches loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Cors:
    """ASGI middleware: the origin rule and CORS headers for ``/api/*`` and ``auth_paths``."""

    def __init__(self, app: Any, policy: OriginPolicy, auth_paths: frozenset[str]) -> None:
        self._app = app
        self._policy = policy
        self._auth_paths = auth_paths

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or not (path.startswith("/api/") or path in self._auth_paths):
            await self._app(scope, receive, send)
            return
        allowed = self._policy.allows_request(scope, origin)
        preflight = scope["method"] == "OPTIONS"
        if not allowed and (preflight or path in self._auth_paths):
            await _forbidden(send, origin)
            return
        cors = [(b"vary", b"Origin")]
        if allowed:
            cors.append((b"access-control-allow-origin", origin.encode("latin-1")))
        if allowed and preflight:
            headers = [*cors, *_PREFLIGHT_HEADERS, (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *cors])
            await send(message)

        await self._app(scope, receive, send_with_cors)


async def _forbidden(send: Send, origin: str) -> None:
    body = to_json(
        ErrorResponse(ApiError("forbidden_origin", f"origin {origin[:100]!r} is not allowed"))
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
