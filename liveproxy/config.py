"""Configuration: an attrs ``Config`` read from the environment and an optional ``.env`` file.

Each setting is declared once, as a field of :class:`Config` made by :func:`setting`: its
variable name (and aliases), its parser and its default. Names of the earlier FastAPI/Axum
servers keep working (``GOOGLE_API_KEY``, ``PROJECT_ID``, ``LOCATION``, ``MODEL``, ``PORT``,
``SESSION_TIME_LIMIT``). An invalid value raises :class:`ConfigError` naming the variable, so
start-up stops with a clear message.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import attrs
from dotenv import dotenv_values
from dotenv.parser import parse_stream

from liveproxy.allowances import Budget, BudgetError, check_countable, parse_budget
from liveproxy.logs import LogFormat
from liveproxy.protocol.live_models import SHUT_DOWN, Backend, model_id
from liveproxy.redact import redact_url

#: The Live model used when ``MODEL`` is not set: Gemini's GA Live model (since 2026-09) on
#: both backends.
DEFAULT_MODEL = "gemini-3.8-live"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Mode = Literal["advanced", "simple", "emulator"]
T = TypeVar("T")
D = TypeVar("D")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


#: The key of a field's metadata that says where the field is read from.
ENV: Final = "liveproxy.env"


@attrs.frozen
class EnvSetting:
    """Where a field is read from: the first of ``names`` set (and not blank) in the
    environment, stripped and given to ``parse``, which raises ValueError to refuse it."""

    names: tuple[str, ...]
    parse: Callable[[str], Any]


def setting(
    name: str,
    *aliases: str,
    parse: Callable[[str], T],
    default: D,
    repr: bool | Callable[[Any], str] = True,
) -> T | D:
    """A field read from the variable ``name`` (or the first of ``aliases`` set) by ``parse``;
    ``default`` when none is set."""
    where = EnvSetting((name, *aliases), parse)
    return attrs.field(default=default, repr=repr, metadata={ENV: where})


def env_settings(cls: type[attrs.AttrsInstance]) -> Iterator[tuple[str, EnvSetting]]:
    """The fields of ``cls`` made by :func:`setting`: (field name, where it is read from)."""
    return ((f.name, f.metadata[ENV]) for f in attrs.fields(cls) if ENV in f.metadata)


def _read(cls: type[attrs.AttrsInstance], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of ``cls`` that ``env`` sets, parsed, by field name.

    Raises:
        ConfigError: ``NAME='raw' is invalid: <why>``.
    """
    values: dict[str, Any] = {}
    for field, where in env_settings(cls):
        for name in where.names:
            if raw := env.get(name, "").strip():
                try:
                    values[field] = where.parse(raw)
                except ValueError as exc:
                    shown = redact_url(raw)  # the message goes to stderr and the journal
                    raise ConfigError(f"{name}={shown!r} is invalid: {exc}") from None
                break
    return values


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else "'***'"


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(w, strict=False) for w in raw.replace(",", " ").split())


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


#: The shortest ``ADMIN_TOKEN`` accepted.
MIN_ADMIN_TOKEN_BYTES: Final = 32


def _usage_records(raw: str) -> bool:
    """``store`` or ``off``."""
    if raw.lower() not in ("store", "off"):
        raise ValueError("expected store or off")
    return raw.lower() == "store"


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


def _words(raw: str) -> frozenset[str]:
    return frozenset(raw.replace(",", " ").split())


def _word_list(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(raw.replace(",", " ").split()))


def _app_directory(raw: str) -> Path:
    """A built front end: an existing directory with an ``index.html``."""
    path = Path(raw)
    if not path.is_dir():
        raise ValueError("not a directory (expected a built front end, e.g. dist/)")
    if not (path / "index.html").is_file():
        raise ValueError("has no index.html (expected a built front end, e.g. dist/)")
    return path


def _tool_names(raw: str) -> frozenset[str] | None:
    names = _words(raw)
    return None if names == {"all"} else names


#: HS256 needs a key of at least 256 bits.
MIN_SECRET_BYTES = 32


@attrs.frozen(kw_only=True)
class SignInSettings:
    """``AUTH_JWT_SECRET`` or ``AUTH_JWKS_URL`` (at most one), optional audience and issuer."""

    jwt_secret: str | None = setting("AUTH_JWT_SECRET", parse=str, default=None, repr=_secret_repr)
    jwks_url: str | None = setting("AUTH_JWKS_URL", parse=str, default=None)
    audience: str | None = setting("AUTH_JWT_AUDIENCE", parse=str, default=None)
    issuer: str | None = setting("AUTH_JWT_ISSUER", parse=str, default=None)

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
    settings = SignInSettings(**_read(SignInSettings, env))
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


#: ``BOT_CHECK`` values: the verifiers of :mod:`liveproxy.web.bot_check`.
BotProvider = Literal["recaptcha-enterprise", "recaptcha", "turnstile", "hcaptcha"]
BOT_PROVIDERS: Final[tuple[BotProvider, ...]] = (
    "recaptcha-enterprise",
    "recaptcha",
    "turnstile",
    "hcaptcha",
)


def _bot_provider(raw: str) -> BotProvider:
    for provider in BOT_PROVIDERS:
        if raw.lower() == provider:
            return provider
    raise ValueError(f"expected one of {', '.join(BOT_PROVIDERS)}")


def _score(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a score from 0.0 to 1.0")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _hostnames(raw: str) -> frozenset[str]:
    return frozenset(w.lower() for w in raw.replace(",", " ").split())


@attrs.frozen(kw_only=True)
class BotCheckSettings:
    """``BOT_CHECK`` and its ``BOT_CHECK_*`` settings (``provider`` None: no bot check)."""

    provider: BotProvider | None = setting("BOT_CHECK", parse=_bot_provider, default=None)
    #: The secret key; for reCAPTCHA Enterprise, the Google Cloud API key.
    secret: str | None = setting("BOT_CHECK_SECRET", parse=str, default=None, repr=_secret_repr)
    site_key: str | None = setting("BOT_CHECK_SITE_KEY", parse=str, default=None)
    project: str | None = setting("BOT_CHECK_PROJECT", parse=str, default=None)
    action: str = setting("BOT_CHECK_ACTION", parse=str, default="LOGIN")
    min_score: float = setting("BOT_CHECK_MIN_SCORE", parse=_score, default=0.5)
    #: The verifier's base URL (None: the provider's own).
    url: str | None = setting(
        "BOT_CHECK_URL", parse=_http_url, default=None, repr=lambda u: repr(u and redact_url(u))
    )
    #: The hostnames a token may have been made on (empty: see :mod:`liveproxy.web.bot_check`).
    hostnames: frozenset[str] = setting(
        "BOT_CHECK_HOSTNAMES", parse=_hostnames, default=frozenset()
    )
    #: The most one verification may take, connecting and reading included.
    timeout_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        return self.provider is not None


def bot_check_from_env(env: Mapping[str, str]) -> BotCheckSettings:
    """The bot check settings of ``env``.

    Raises:
        ConfigError: a value does not parse; ``BOT_CHECK`` is set without ``BOT_CHECK_SECRET``
            (or, for reCAPTCHA Enterprise, without ``BOT_CHECK_SITE_KEY`` and
            ``BOT_CHECK_PROJECT``); a ``BOT_CHECK_*`` setting is set without ``BOT_CHECK``.
    """
    settings = BotCheckSettings(**_read(BotCheckSettings, env))
    if settings.provider is None:
        for _, where in env_settings(BotCheckSettings):
            name = next((n for n in where.names if env.get(n, "").strip()), None)
            if name is not None:
                raise ConfigError(f"{name} is set but BOT_CHECK is not (the bot check is off)")
        return settings
    needed = ["BOT_CHECK_SECRET"]
    if settings.provider == "recaptcha-enterprise":
        needed += ["BOT_CHECK_SITE_KEY", "BOT_CHECK_PROJECT"]
    missing = [name for name in needed if not env.get(name, "").strip()]
    if missing:
        raise ConfigError(f"BOT_CHECK={settings.provider} needs {' and '.join(missing)}")
    return settings


EphemeralUpstream = Literal["liveproxy", "google"]


def _ephemeral_upstream(raw: str) -> EphemeralUpstream:
    value = raw.lower()
    if value == "liveproxy":
        return "liveproxy"
    if value == "google":
        return "google"
    raise ValueError("expected liveproxy or google")


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the proxy. Build it with :meth:`from_env`; tests build it directly.

    A field made by :func:`setting` is read from the environment; the others are not.
    """

    api_key: str | None = setting(
        "GOOGLE_API_KEY", "GEMINI_API_KEY", parse=str, default=None, repr=_secret_repr
    )
    project_id: str | None = setting("PROJECT_ID", "GOOGLE_CLOUD_PROJECT", parse=str, default=None)
    location: str = setting("LOCATION", parse=str, default="us-central1")
    #: A model Google has shut down is refused at start (:data:`SHUT_DOWN`).
    model: str = setting("MODEL", parse=str, default=DEFAULT_MODEL)
    allowed_models: frozenset[str] = setting("ALLOWED_MODELS", parse=_words, default=frozenset())
    api_version: str | None = setting("API_VERSION", parse=str, default=None)
    upstream_url: str | None = setting("UPSTREAM_URL", parse=str, default=None)
    use_emulator: bool = setting("EMULATOR", parse=_bool, default=True)

    host: str = setting("HOST", parse=str, default="127.0.0.1")
    port: int = setting("PORT", parse=_int_in(0, 65535), default=8000)
    #: None: the server's own origin and loopback origins; ``{"*"}``: any origin.
    allowed_origins: frozenset[str] | None = setting(
        "ALLOWED_ORIGINS", parse=_origins, default=None
    )
    auth_paths: tuple[str, ...] = setting("AUTH_PATHS", parse=_paths, default=("/api/auth",))
    ws_paths: tuple[str, ...] = setting("WS_PATHS", parse=_paths, default=("/ws",))
    #: Sign-ins per client: a bucket of ``count`` refilled over ``period`` s (None: off).
    auth_rate_limit: tuple[int, float] | None = setting(
        "AUTH_RATE_LIMIT", parse=_rate, default=(30, 60.0)
    )
    max_sessions_per_client: int = setting("MAX_SESSIONS_PER_CLIENT", parse=_int_in(0), default=20)
    trusted_proxies: tuple[IPNetwork, ...] = setting("TRUSTED_PROXIES", parse=_networks, default=())
    #: The ``AUTH_*`` settings, read as a group by :func:`settings_from_env`.
    signin: SignInSettings = attrs.field(factory=SignInSettings)
    #: The ``BOT_CHECK*`` settings, read as a group by :func:`bot_check_from_env`.
    bot_check: BotCheckSettings = attrs.field(factory=BotCheckSettings)
    log_level: str = setting("LOG_LEVEL", parse=_log_level, default="INFO")
    log_format: LogFormat = setting("LOG_FORMAT", parse=_log_format, default="text")

    session_time_limit: int = setting("SESSION_TIME_LIMIT", parse=_int_in(1), default=180)
    session_min_seconds: int = setting("SESSION_MIN_SECONDS", parse=_int_in(1), default=60)
    session_max_seconds: int = setting("SESSION_MAX_SECONDS", parse=_int_in(1), default=600)
    token_ttl_seconds: float = setting("TOKEN_TTL_SECONDS", parse=_seconds, default=30.0)
    max_sessions: int = setting("MAX_SESSIONS", parse=_int_in(1), default=300)

    setup_timeout_seconds: float = setting("SETUP_TIMEOUT_SECONDS", parse=_seconds, default=10.0)
    max_message_bytes: int = setting(
        "MAX_MESSAGE_BYTES", parse=_int_in(1024), default=2 * 1024 * 1024
    )
    browser_message_rate: int = setting("BROWSER_MESSAGE_RATE", parse=_int_in(0), default=400)
    request_body_timeout_seconds: float = setting(
        "REQUEST_BODY_TIMEOUT_SECONDS", parse=_seconds, default=10.0
    )
    ws_compression: bool = setting("WS_COMPRESSION", parse=_bool, default=False)
    browser_queue_bytes: int = setting("BROWSER_QUEUE_BYTES", parse=_int_in(1024), default=480_000)
    upstream_buffer_bytes: int = setting(
        "UPSTREAM_BUFFER_BYTES", parse=_int_in(1024), default=256 * 1024
    )
    upstream_max_message_bytes: int = 32 * 1024 * 1024
    context_window_compression: bool = setting(
        "CONTEXT_WINDOW_COMPRESSION", parse=_bool, default=True
    )
    reconnect_attempts: int = setting("RECONNECT_ATTEMPTS", parse=_int_in(0, 100), default=3)
    upstream_ping_interval_seconds: float = setting(
        "UPSTREAM_PING_INTERVAL_SECONDS", parse=_seconds_or_off, default=30.0
    )
    upstream_pong_timeout_seconds: float = setting(
        "UPSTREAM_PONG_TIMEOUT_SECONDS", parse=_seconds, default=60.0
    )
    browser_keepalive_seconds: float = setting(
        "BROWSER_KEEPALIVE_SECONDS", parse=_seconds_or_off, default=20.0
    )
    browser_timeout_seconds: float = setting(
        "BROWSER_TIMEOUT_SECONDS", parse=_seconds_or_off, default=30.0
    )
    shutdown_grace_seconds: float = setting(
        "SHUTDOWN_GRACE_SECONDS", parse=_seconds_or_off, default=10.0
    )

    #: Worker processes on this host (``auto`` is resolved to the CPU count).
    workers: int = setting("WORKERS", parse=_workers, default=1)
    #: ``memory:``, ``sqlite:///path`` or ``redis://...``; None: memory with one worker, a
    #: private SQLite file with several (see :mod:`liveproxy.serving.supervisor`).
    state_url: str | None = setting(
        "STATE_URL", parse=_state_url, default=None, repr=lambda u: repr(u and redact_url(u))
    )
    session_lease_seconds: float = setting("SESSION_LEASE_SECONDS", parse=_seconds, default=30.0)
    #: How long a conversation whose socket ended stays resumable (0: not resumable).
    resume_window_seconds: float = setting(
        "RESUME_WINDOW_SECONDS", parse=_seconds_or_off, default=60.0
    )
    #: ``host:port`` (``[::1]:port`` for IPv6) of the Prometheus listener; None: no metrics.
    metrics_bind: str | None = setting("METRICS_BIND", parse=_bind, default=None)
    #: Python modules whose ``@tool`` functions the server runs itself (in this order).
    tools_modules: tuple[str, ...] = setting("TOOLS_MODULES", parse=_word_list, default=())
    #: A TOML file of HTTP tools.
    tools_file: Path | None = setting("TOOLS_FILE", parse=Path, default=None)
    #: Which of the configured tools are offered (None: all).
    server_tools: frozenset[str] | None = setting("SERVER_TOOLS", parse=_tool_names, default=None)
    #: Worker threads for sync tools, per process (a hung tool holds its thread until it returns).
    tool_threads: int = setting("TOOL_THREADS", parse=_int_in(1, 256), default=8)
    #: The app's built front end, served at ``/`` (None: ``/`` leads to the demo page).
    static_dir: Path | None = setting("STATIC_DIR", parse=_app_directory, default=None)
    #: A file each ended session's usage record is appended to (JSON lines; None: none).
    usage_log: Path | None = setting("USAGE_LOG", parse=Path, default=None)
    #: The operator's price table (TOML, see :mod:`liveproxy.core.prices`; None: no cost).
    prices_file: Path | None = setting("PRICES_FILE", parse=Path, default=None)
    #: Who mints ``POST /api/auth {"ephemeral"}`` tokens: liveproxy (for its native endpoint)
    #: or Google (broker mode: the browser then connects to Google itself).
    ephemeral_upstream: EphemeralUpstream = setting(
        "EPHEMERAL_UPSTREAM", parse=_ephemeral_upstream, default="liveproxy"
    )
    #: ``host:port`` of the operator's listener (:mod:`liveproxy.web.admin_app`); None: off.
    admin_bind: str | None = setting("ADMIN_BIND", parse=_bind, default=None)
    #: The operator's bearer token (at least :data:`MIN_ADMIN_TOKEN_BYTES`), needed with it.
    admin_token: str | None = setting("ADMIN_TOKEN", parse=str, default=None, repr=_secret_repr)
    #: Whether ended sessions' usage records are kept in the state store (None: when
    #: ``ADMIN_BIND`` is set), for ``GET /usage``.
    usage_records: bool | None = setting("USAGE_RECORDS", parse=_usage_records, default=None)
    #: How long the state store keeps usage records.
    usage_retention_days: int = setting("USAGE_RETENTION_DAYS", parse=_int_in(1, 3660), default=35)

    @property
    def usage_records_in_store(self) -> bool:
        """Whether ended sessions' usage records go to the state store."""
        return self.admin_bind is not None if self.usage_records is None else self.usage_records

    #: Each client's budget (see :mod:`liveproxy.core.budget`; None: none).
    budget_per_client: Budget | None = setting(
        "BUDGET_PER_CLIENT", parse=parse_budget, default=None
    )
    #: The deployment's budget, every client's use together (None: none).
    budget_total: Budget | None = setting("BUDGET_TOTAL", parse=parse_budget, default=None)

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
        env: dict[str, str] = {}
        if env_file is not None and env_file.is_file():
            env.update(_read_env_file(env_file))
        env.update(os.environ if environ is None else environ)
        try:
            signin = settings_from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        values = _read(cls, env)
        config = cls(signin=signin, bot_check=bot_check_from_env(env), **values)
        for name in (config.model, *sorted(config.allowed_models)):
            if model_id(name) in SHUT_DOWN[config.backend]:
                variable = "MODEL" if name == config.model else "ALLOWED_MODELS"
                raise ConfigError(
                    f"{variable}: {name} has been shut down by Google (every session would be "
                    f"refused): use {DEFAULT_MODEL}"
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
        if config.admin_bind is not None:
            size = len((config.admin_token or "").encode())
            if size < MIN_ADMIN_TOKEN_BYTES:
                raise ConfigError(
                    f"ADMIN_BIND needs ADMIN_TOKEN of at least {MIN_ADMIN_TOKEN_BYTES} bytes"
                    f" (got {size}): e.g. `openssl rand -hex 32`"
                )
        for name, budget in (
            ("BUDGET_PER_CLIENT", config.budget_per_client),
            ("BUDGET_TOTAL", config.budget_total),
        ):
            try:
                if budget is not None:
                    check_countable(budget, config.prices_file is not None)
            except BudgetError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if config.upstream_url and not config.upstream_url.startswith(("ws://", "wss://")):
            shown = redact_url(config.upstream_url)
            raise ConfigError(f"UPSTREAM_URL must start with ws:// or wss:// (got {shown!r})")
        if config.ephemeral_upstream == "google" and config.backend == "vertex":
            raise ConfigError(
                "EPHEMERAL_UPSTREAM=google needs a Gemini Developer API key (GOOGLE_API_KEY): "
                "Vertex AI has no ephemeral tokens"
            )
        return config


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
