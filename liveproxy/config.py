"""Configuration: an attrs ``Config`` read from the environment and an optional ``.env`` file.

Names of the earlier FastAPI/Axum servers keep working (``GOOGLE_API_KEY``, ``PROJECT_ID``,
``LOCATION``, ``MODEL``, ``PORT``, ``SESSION_TIME_LIMIT``). An invalid value raises
:class:`ConfigError` naming the variable, so start-up stops with a clear message.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import attrs
from dotenv import dotenv_values
from dotenv.parser import parse_stream

from liveproxy.logs import LogFormat
from liveproxy.redact import redact_url

#: The Live model used when ``MODEL`` is not set (Gemini's GA Live model as of 2026-09).
DEFAULT_MODEL = "gemini-3.8-live"
#: The same on Vertex AI, which does not list gemini-3.8-live among its Live models.
DEFAULT_VERTEX_MODEL = "gemini-live-2.5-flash-native-audio"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Backend = Literal["developer", "vertex"]
Mode = Literal["advanced", "simple", "emulator"]
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else "'***'"


#: HS256 needs a key of at least 256 bits.
MIN_SECRET_BYTES = 32


@attrs.frozen(kw_only=True)
class SignInSettings:
    """``AUTH_JWT_SECRET`` or ``AUTH_JWKS_URL`` (at most one), optional audience and issuer."""

    jwt_secret: str | None = attrs.field(default=None, repr=_secret_repr)
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwks_url)


def settings_from_env(env: Mapping[str, str]) -> SignInSettings:
    """The sign-in settings of ``env`` (unset and blank variables are None).

    Raises:
        ValueError: both ``AUTH_JWT_SECRET`` and ``AUTH_JWKS_URL`` are set, the secret is shorter
            than 32 bytes, the JWKS URL is not http(s), or an audience or issuer is set without
            either (the message names the variable).
    """

    def text(name: str) -> str | None:
        return env.get(name, "").strip() or None

    settings = SignInSettings(
        jwt_secret=text("AUTH_JWT_SECRET"),
        jwks_url=text("AUTH_JWKS_URL"),
        audience=text("AUTH_JWT_AUDIENCE"),
        issuer=text("AUTH_JWT_ISSUER"),
    )
    if settings.jwt_secret and settings.jwks_url:
        raise ValueError("AUTH_JWT_SECRET and AUTH_JWKS_URL are both set: set one of them")
    if settings.jwt_secret and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256")
    if settings.jwks_url:
        parts = urlsplit(settings.jwks_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            shown = redact_url(settings.jwks_url)
            raise ValueError(f"AUTH_JWKS_URL must be an http:// or https:// URL (got {shown!r})")
    for name, value in (
        ("AUTH_JWT_AUDIENCE", settings.audience),
        ("AUTH_JWT_ISSUER", settings.issuer),
    ):
        if value and not settings.enabled:
            raise ValueError(
                f"{name} is set but sign-in is not (set AUTH_JWT_SECRET or AUTH_JWKS_URL)"
            )
    return settings


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the proxy. Build it with :meth:`from_env`; tests build it directly."""

    api_key: str | None = attrs.field(default=None, repr=_secret_repr)
    project_id: str | None = None
    location: str = "us-central1"
    model: str = DEFAULT_MODEL
    allowed_models: frozenset[str] = frozenset()
    api_version: str | None = None
    upstream_url: str | None = None
    use_emulator: bool = True

    host: str = "127.0.0.1"
    port: int = 8000
    #: None: the server's own origin and loopback origins; ``{"*"}``: any origin.
    allowed_origins: frozenset[str] | None = None
    auth_paths: tuple[str, ...] = ("/api/auth",)
    ws_paths: tuple[str, ...] = ("/ws",)
    #: Sign-ins per client: a bucket of ``count`` refilled over ``period`` s (None: off).
    auth_rate_limit: tuple[int, float] | None = (30, 60.0)
    max_sessions_per_client: int = 20
    trusted_proxies: tuple[IPNetwork, ...] = ()
    signin: SignInSettings = attrs.field(factory=SignInSettings)
    log_level: str = "INFO"
    log_format: LogFormat = "text"

    session_time_limit: int = 180
    session_min_seconds: int = 60
    session_max_seconds: int = 600
    token_ttl_seconds: float = 30.0
    max_sessions: int = 300

    setup_timeout_seconds: float = 10.0
    max_message_bytes: int = 2 * 1024 * 1024
    browser_message_rate: int = 400
    request_body_timeout_seconds: float = 10.0
    ws_compression: bool = False
    browser_queue_bytes: int = 480_000
    upstream_buffer_bytes: int = 256 * 1024
    upstream_max_message_bytes: int = 32 * 1024 * 1024
    context_window_compression: bool = True
    reconnect_attempts: int = 3
    upstream_ping_interval_seconds: float = 30.0
    upstream_pong_timeout_seconds: float = 60.0
    browser_keepalive_seconds: float = 20.0
    browser_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0

    #: Worker processes on this host (``WORKERS``; ``auto`` is resolved to the CPU count).
    workers: int = 1
    #: ``memory:``, ``sqlite:///path`` or ``redis://...``; None: memory with one worker, a
    #: private SQLite file with several (see :mod:`liveproxy.serving.supervisor`).
    state_url: str | None = attrs.field(default=None, repr=lambda u: repr(u and redact_url(u)))
    session_lease_seconds: float = 30.0
    #: How long a conversation whose socket ended stays resumable (0: not resumable).
    resume_window_seconds: float = 60.0
    #: ``host:port`` (``[::1]:port`` for IPv6) of the Prometheus listener; None: no metrics.
    metrics_bind: str | None = None

    @property
    def backend(self) -> Backend:
        """Vertex AI when a project is set and no API key; the Developer API otherwise."""
        return "vertex" if self.project_id and not self.api_key else "developer"

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key or self.project_id)

    @property
    def mode(self) -> Mode:
        """``advanced`` with credentials or an explicit upstream; ``emulator`` when the built-in
        emulator stands in; ``simple`` when nothing is configured."""
        if self.has_credentials or self.upstream_url:
            return "advanced"
        return "emulator" if self.use_emulator else "simple"

    @property
    def missing(self) -> list[str]:
        """What ``simple``/``emulator`` mode lacks to reach Google (names, never values)."""
        return [] if self.mode == "advanced" else ["GOOGLE_API_KEY"]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
    ) -> Config:
        """Read settings from ``environ`` (default ``os.environ``) over an optional ``.env``.

        Raises:
            ConfigError: a value does not parse or is out of range (the message names it).
        """
        values: dict[str, str] = {}
        if env_file is not None and env_file.is_file():
            values.update(_read_env_file(env_file))
        values.update(os.environ if environ is None else environ)
        env = _Env(values)
        try:
            signin = settings_from_env(values)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        config = cls(
            api_key=env.text("GOOGLE_API_KEY") or env.text("GEMINI_API_KEY"),
            project_id=env.text("PROJECT_ID") or env.text("GOOGLE_CLOUD_PROJECT"),
            location=env.text("LOCATION") or "us-central1",
            model=env.text("MODEL") or _default_model(env),
            allowed_models=frozenset(env.words("ALLOWED_MODELS")),
            api_version=env.text("API_VERSION"),
            upstream_url=env.text("UPSTREAM_URL"),
            use_emulator=env.parse("EMULATOR", _bool, True),
            host=env.text("HOST") or "127.0.0.1",
            allowed_origins=env.parse("ALLOWED_ORIGINS", _origins, None),
            auth_paths=env.parse("AUTH_PATHS", _paths, ("/api/auth",)),
            ws_paths=env.parse("WS_PATHS", _paths, ("/ws",)),
            auth_rate_limit=env.parse("AUTH_RATE_LIMIT", _rate, _DEFAULT_AUTH_RATE),
            max_sessions_per_client=env.parse("MAX_SESSIONS_PER_CLIENT", _int_in(0), 20),
            trusted_proxies=env.parse("TRUSTED_PROXIES", _networks, ()),
            signin=signin,
            port=env.parse("PORT", _int_in(0, 65535), 8000),
            log_level=env.parse("LOG_LEVEL", _log_level, "INFO"),
            log_format=env.parse("LOG_FORMAT", _log_format, "text"),
            session_time_limit=env.parse("SESSION_TIME_LIMIT", _int_in(1), 180),
            session_min_seconds=env.parse("SESSION_MIN_SECONDS", _int_in(1), 60),
            session_max_seconds=env.parse("SESSION_MAX_SECONDS", _int_in(1), 600),
            token_ttl_seconds=env.parse("TOKEN_TTL_SECONDS", _seconds, 30.0),
            max_sessions=env.parse("MAX_SESSIONS", _int_in(1), 300),
            setup_timeout_seconds=env.parse("SETUP_TIMEOUT_SECONDS", _seconds, 10.0),
            max_message_bytes=env.parse("MAX_MESSAGE_BYTES", _int_in(1024), 2 * 1024 * 1024),
            browser_message_rate=env.parse("BROWSER_MESSAGE_RATE", _int_in(0), 400),
            ws_compression=env.parse("WS_COMPRESSION", _bool, False),
            request_body_timeout_seconds=env.parse("REQUEST_BODY_TIMEOUT_SECONDS", _seconds, 10.0),
            browser_queue_bytes=env.parse("BROWSER_QUEUE_BYTES", _int_in(1024), 480_000),
            upstream_buffer_bytes=env.parse("UPSTREAM_BUFFER_BYTES", _int_in(1024), 256 * 1024),
            context_window_compression=env.parse("CONTEXT_WINDOW_COMPRESSION", _bool, True),
            reconnect_attempts=env.parse("RECONNECT_ATTEMPTS", _int_in(0, 100), 3),
            upstream_ping_interval_seconds=env.parse(
                "UPSTREAM_PING_INTERVAL_SECONDS", _seconds_or_off, 30.0
            ),
            upstream_pong_timeout_seconds=env.parse(
                "UPSTREAM_PONG_TIMEOUT_SECONDS", _seconds, 60.0
            ),
            browser_keepalive_seconds=env.parse("BROWSER_KEEPALIVE_SECONDS", _seconds_or_off, 20.0),
            browser_timeout_seconds=env.parse("BROWSER_TIMEOUT_SECONDS", _seconds_or_off, 30.0),
            shutdown_grace_seconds=env.parse("SHUTDOWN_GRACE_SECONDS", _seconds_or_off, 10.0),
            workers=env.parse("WORKERS", _workers, 1),
            state_url=env.parse("STATE_URL", _state_url, None),
            session_lease_seconds=env.parse("SESSION_LEASE_SECONDS", _seconds, 30.0),
            resume_window_seconds=env.parse("RESUME_WINDOW_SECONDS", _seconds_or_off, 60.0),
            metrics_bind=env.parse("METRICS_BIND", _bind, None),
        )
        if config.session_min_seconds > config.session_max_seconds:
            raise ConfigError(
                "SESSION_MIN_SECONDS must not exceed SESSION_MAX_SECONDS "
                f"({config.session_min_seconds} > {config.session_max_seconds})"
            )
        if config.workers > 1 and config.state_url == "memory:":
            raise ConfigError(
                "STATE_URL=memory: is one process's memory: with WORKERS > 1 use sqlite:/// "
                "(the default) or redis://"
            )
        if config.upstream_url and not config.upstream_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"UPSTREAM_URL must start with ws:// or wss:// (got {config.upstream_url!r})"
            )
        return config


def _default_model(env: _Env) -> str:
    """The default Live model of the backend the environment selects."""
    vertex = not (env.text("GOOGLE_API_KEY") or env.text("GEMINI_API_KEY")) and (
        env.text("PROJECT_ID") or env.text("GOOGLE_CLOUD_PROJECT")
    )
    return DEFAULT_VERTEX_MODEL if vertex else DEFAULT_MODEL


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables ``path`` sets, read by python-dotenv (quotes, ``export``, inline comments,
    escapes), taken literally (no ``${VAR}`` expansion); a bare ``KEY`` line sets nothing.

    Raises:
        ConfigError: a line python-dotenv cannot parse (it would only log a warning and skip it,
            and the setting on it would silently not apply).
    """
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise ConfigError(f"{path}:{binding.original.line}: expected KEY=value")
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {key: value for key, value in values.items() if value is not None}


@attrs.frozen
class _Env:
    values: Mapping[str, str]

    def text(self, name: str) -> str | None:
        value = self.values.get(name, "").strip()
        return value or None

    def words(self, name: str) -> list[str]:
        return [w for w in (self.text(name) or "").replace(",", " ").split() if w]

    def parse(self, name: str, parser: Callable[[str], T], default: T) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return parser(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(w, strict=False) for w in raw.replace(",", " ").split())


_DEFAULT_AUTH_RATE: tuple[int, float] | None = (30, 60.0)
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def _rate(raw: str) -> tuple[int, float] | None:
    """``"30/minute"`` -> (30, 60.0); ``"0"`` -> None (off)."""
    if raw.strip() == "0":
        return None
    count, sep, period = raw.partition("/")
    if not sep or period.strip() not in _PERIODS or not count.strip().isdigit():
        raise ValueError("expected N/second, N/minute or N/hour, or 0 for off")
    if int(count) < 1:
        raise ValueError("expected at least 1 per period (0 turns it off)")
    return int(count), _PERIODS[period.strip()]


def _origins(raw: str) -> frozenset[str]:
    origins = frozenset(w.rstrip("/") for w in raw.replace(",", " ").split())
    for origin in origins - {"*"}:
        if not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com or *")
    return origins


def _paths(raw: str) -> tuple[str, ...]:
    paths = tuple(dict.fromkeys(w for w in raw.replace(",", " ").split()))
    if not paths or not all(p.startswith("/") for p in paths):
        raise ValueError("expected a list of paths starting with /")
    return paths


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"expected an integer {bounds}")
        return value

    return parse


def _seconds(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number of seconds")
    return value


def _seconds_or_off(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a number of seconds >= 0 (0 turns it off)")
    return value


def _workers(raw: str) -> int:
    """``"auto"`` -> one per CPU; otherwise an integer from 1 to 64."""
    if raw.lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return _int_in(1, 64)(raw)


def split_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ("127.0.0.1", 9464); ``"[::1]:9464"`` -> ("::1", 9464).

    Raises:
        ValueError: not ``host:port`` (an IPv6 address must be in brackets; port 0 to 65535).
    """
    if bind.startswith("["):
        host, sep, port = bind[1:].partition("]:")
        if not sep:
            raise ValueError("expected [ipv6]:port")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = bind.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError("expected host:port, or [ipv6]:port")
        if not all(c.isascii() and (c.isalnum() or c in ".-_") for c in host):
            raise ValueError(f"{host!r} is not a host name or address")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("expected a port from 0 to 65535")
    return host, int(port)


def _bind(raw: str) -> str:
    split_bind(raw)
    return raw


STATE_SCHEMES = ("memory:", "sqlite:///", "redis://", "rediss://")


def _state_url(raw: str) -> str:
    if raw == "memory":
        return "memory:"
    if not raw.startswith(STATE_SCHEMES) or raw in STATE_SCHEMES[1:]:
        raise ValueError("expected memory:, sqlite:///path/state.db or redis://host:port/db")
    return raw


def _log_format(raw: str) -> LogFormat:
    lowered = raw.lower()
    if lowered == "text":
        return "text"
    if lowered == "json":
        return "json"
    raise ValueError("expected text or json")


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level
