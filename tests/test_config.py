"""Config from the environment and .env: names of the earlier servers, defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import liveproxy
from liveproxy.config import (
    DEFAULT_MODEL,
    BotCheckSettings,
    Config,
    ConfigError,
    SignInSettings,
    env_settings,
    split_bind,
)

#: A directory with an index.html.
DEMO_DIR = Path(liveproxy.__file__).parent / "static"


def from_env(env: dict[str, str], env_file: Path | None = None) -> Config:
    return Config.from_env(env, env_file=env_file)


def test_defaults_match_the_earlier_servers() -> None:
    config = from_env({})
    assert config.port == 8000
    assert config.session_time_limit == 180
    assert config.token_ttl_seconds == 30
    assert (config.session_min_seconds, config.session_max_seconds) == (60, 600)
    assert config.location == "us-central1"
    assert config.model == DEFAULT_MODEL
    assert config.mode == "emulator"
    assert config.missing == ["GOOGLE_API_KEY"]


def test_gemini_api_key_is_an_alias_and_the_key_never_shows_in_repr() -> None:
    config = from_env({"GEMINI_API_KEY": "sekrit-123"})
    assert config.api_key == "sekrit-123"
    assert config.mode == "advanced"
    assert config.backend == "developer"
    assert "sekrit-123" not in repr(config)
    assert from_env({"GOOGLE_API_KEY": "a", "GEMINI_API_KEY": "b"}).api_key == "a"


def test_a_project_without_a_key_selects_vertex() -> None:
    config = from_env({"PROJECT_ID": "p1", "LOCATION": "europe-west4"})
    assert (config.backend, config.mode, config.location) == ("vertex", "advanced", "europe-west4")
    assert from_env({"PROJECT_ID": "p1", "GOOGLE_API_KEY": "k"}).backend == "developer"
    # gemini-3.8-live is GA on both backends: one default.
    assert config.model == "gemini-3.8-live"
    assert from_env({"PROJECT_ID": "p1", "MODEL": "gemini-x"}).model == "gemini-x"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MODEL": "gemini-2.0-flash-live-001"}, "MODEL: gemini-2.0-flash-live-001"),
        ({"MODEL": "models/gemini-live-2.5-flash-preview"}, "MODEL: models/gemini-live-2.5"),
        ({"ALLOWED_MODELS": "gemini-3.8-live gemini-2.0-flash-live-001"}, "ALLOWED_MODELS: "),
    ],
)
def test_a_model_google_shut_down_is_refused_at_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match="has been shut down by Google") as caught:
        from_env(env)
    assert str(caught.value).startswith(named)
    # Vertex never served them under these names: not ours to refuse there.
    assert from_env({**env, "PROJECT_ID": "p1"}).backend == "vertex"


def test_without_the_emulator_nothing_configured_is_simple_mode() -> None:
    config = from_env({"EMULATOR": "off"})
    assert config.mode == "simple"
    assert config.missing == ["GOOGLE_API_KEY"]


def test_every_setting_is_read() -> None:
    config = from_env(
        {
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "MODEL": "gemini-x",
            "ALLOWED_MODELS": "a, b c",
            "SESSION_TIME_LIMIT": "90",
            "TOKEN_TTL_SECONDS": "12.5",
            "MAX_SESSIONS": "7",
            "SETUP_TIMEOUT_SECONDS": "3",
            "MAX_MESSAGE_BYTES": "4096",
            "BROWSER_QUEUE_BYTES": "8192",
            "UPSTREAM_URL": "ws://127.0.0.1:9001",
            "CONTEXT_WINDOW_COMPRESSION": "false",
            "SHUTDOWN_GRACE_SECONDS": "0",
            "LOG_LEVEL": "debug",
        }
    )
    assert (config.host, config.port, config.model) == ("0.0.0.0", 9000, "gemini-x")
    assert config.allowed_models == frozenset({"a", "b", "c"})
    assert config.session_time_limit == 90
    assert config.token_ttl_seconds == 12.5
    assert config.max_sessions == 7
    assert config.setup_timeout_seconds == 3
    assert config.max_message_bytes == 4096
    assert config.browser_queue_bytes == 8192
    assert config.upstream_url == "ws://127.0.0.1:9001"
    assert config.context_window_compression is False
    assert config.shutdown_grace_seconds == 0
    assert config.log_level == "DEBUG"
    assert config.mode == "advanced"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("SESSION_TIME_LIMIT", "0"),
        ("TOKEN_TTL_SECONDS", "-1"),
        ("TOKEN_TTL_SECONDS", "nan"),
        ("MAX_SESSIONS", "1.5"),
        ("CONTEXT_WINDOW_COMPRESSION", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("UPSTREAM_URL", "http://example.com"),
        ("ALLOWED_ORIGINS", "app.example.com"),
        ("AUTH_PATHS", "api/auth"),
        ("WS_PATHS", ","),
        ("AUTH_RATE_LIMIT", "30/fortnight"),
        ("AUTH_RATE_LIMIT", "-3/minute"),
        ("TRUSTED_PROXIES", "not-an-address"),
        ("MAX_SESSIONS_PER_CLIENT", "-1"),
        ("WORKERS", "0"),
        ("WORKERS", "many"),
        ("STATE_URL", "postgres://db/state"),
        ("STATE_URL", "sqlite:///"),
        ("STATE_URL", "sqlite://relative.db"),
        ("SESSION_LEASE_SECONDS", "0"),
        ("METRICS_BIND", "9464"),
        ("METRICS_BIND", "127.0.0.1:"),
        ("METRICS_BIND", "127.0.0.1:65536"),
        ("METRICS_BIND", ":9464"),
        ("METRICS_BIND", "::1:9464"),
        ("METRICS_BIND", "[::1]9464"),
        ("METRICS_BIND", "[not-v6]:9464"),
        ("METRICS_BIND", "http://127.0.0.1:9464"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STATE_URL", "postgres://app:hunter2@db/state"),
        ("UPSTREAM_URL", "https://app:hunter2@gateway.example/live"),
        ("UPSTREAM_URL", "https://gateway.example/live?key=hunter2"),
    ],
)
def test_a_refused_value_s_credentials_stay_out_of_the_message(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        from_env({name: value})
    assert "hunter2" not in str(refused.value)
    assert "***" in str(refused.value)  # the value is shown, masked


def test_origins_and_paths() -> None:
    default = from_env({})
    assert (default.allowed_origins, default.auth_paths, default.ws_paths) == (
        None,
        ("/api/auth",),
        ("/ws",),
    )
    config = from_env(
        {
            "ALLOWED_ORIGINS": "https://a.example, https://b.example/",
            "AUTH_PATHS": "/api/auth,/api/v1/gemini-live/auth",
            "WS_PATHS": "/ws /api/v1/gemini-live/ws /ws",
        }
    )
    assert config.allowed_origins == frozenset({"https://a.example", "https://b.example"})
    assert config.auth_paths == ("/api/auth", "/api/v1/gemini-live/auth")
    assert config.ws_paths == ("/ws", "/api/v1/gemini-live/ws")
    assert from_env({"ALLOWED_ORIGINS": "*"}).allowed_origins == frozenset({"*"})


def test_client_limits() -> None:
    default = from_env({})
    assert (default.auth_rate_limit, default.max_sessions_per_client) == ((30, 60.0), 20)
    assert default.trusted_proxies == ()
    config = from_env(
        {
            "AUTH_RATE_LIMIT": "5/second",
            "MAX_SESSIONS_PER_CLIENT": "0",
            "TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        }
    )
    assert (config.auth_rate_limit, config.max_sessions_per_client) == ((5, 1.0), 0)
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert from_env({"AUTH_RATE_LIMIT": "0"}).auth_rate_limit is None
    assert from_env({"AUTH_RATE_LIMIT": "100/hour"}).auth_rate_limit == (100, 3600.0)


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ConfigError, match="SESSION_MIN_SECONDS"):
        from_env({"SESSION_MIN_SECONDS": "700"})


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport GOOGLE_API_KEY='from-file'\nPORT=8100\n\nMODEL=\"m1\"\n",
        encoding="utf-8",
    )
    config = from_env({"PORT": "8200"}, env_file)
    assert config.api_key == "from-file"
    assert config.port == 8200
    assert config.model == "m1"


def test_a_malformed_dotenv_line_is_reported_with_its_number(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=1\nthis is not a setting\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\.env:2"):
        from_env({}, env_file)


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('MODEL="m1"  # the model', "m1"),
        ("MODEL=m1 # the model", "m1"),
        ("MODEL='m1 # not a comment'", "m1 # not a comment"),
        ("export MODEL=m1", "m1"),
        ("  export   MODEL = 'm1'  ", "m1"),
        ('MODEL="m\\"1"', 'm"1'),
        ("MODEL=m#1", "m#1"),
        ("MODEL=${HOME}", "${HOME}"),
    ],
)
def test_dotenv_lines_are_read_as_python_dotenv_reads_them(
    tmp_path: Path, line: str, value: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"{line}\n", encoding="utf-8")
    assert from_env({}, env_file).model == value


def test_a_bare_dotenv_key_sets_nothing(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=8100\nPORT\nMODEL\nLOCATION=\n", encoding="utf-8")
    config = from_env({}, env_file)
    assert (config.port, config.model, config.location) == (8000, DEFAULT_MODEL, "us-central1")


def test_workers_and_the_state_store() -> None:
    assert (from_env({}).workers, from_env({}).state_url) == (1, None)
    assert from_env({}).session_lease_seconds == 30
    config = from_env(
        {"WORKERS": "3", "STATE_URL": "redis://:hunter2@cache:6379/2", "SESSION_LEASE_SECONDS": "5"}
    )
    assert (config.workers, config.session_lease_seconds) == (3, 5)
    assert config.state_url == "redis://:hunter2@cache:6379/2"
    assert "hunter2" not in repr(config)
    assert from_env({"WORKERS": "auto"}).workers >= 1
    assert from_env({"STATE_URL": "sqlite:///var/lib/lp/state.db"}).state_url is not None
    with pytest.raises(ConfigError, match="WORKERS > 1"):
        from_env({"WORKERS": "2", "STATE_URL": "memory:"})


def test_the_static_dir_must_be_a_built_front_end(tmp_path: Path) -> None:
    assert from_env({}).static_dir is None
    assert from_env({"STATIC_DIR": str(DEMO_DIR)}).static_dir == DEMO_DIR
    (tmp_path / "file").write_text("x")
    for missing, why in [
        (tmp_path / "nope", "not a directory"),
        (tmp_path / "file", "not a directory"),
        (tmp_path, "has no index.html"),
    ]:
        with pytest.raises(ConfigError, match=f"^STATIC_DIR=.* is invalid: {why}"):
            from_env({"STATIC_DIR": str(missing)})


def test_the_metrics_listener() -> None:
    assert from_env({}).metrics_bind is None
    assert from_env({"METRICS_BIND": "127.0.0.1:9464"}).metrics_bind == "127.0.0.1:9464"
    assert split_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert split_bind("[::1]:0") == ("::1", 0)
    assert split_bind("metrics.internal:9464") == ("metrics.internal", 9464)


#: A valid value, not the default, for every variable a setting is read from.
SAMPLES = {
    "GOOGLE_API_KEY": "key-1",
    "GEMINI_API_KEY": "key-2",
    "PROJECT_ID": "project-1",
    "GOOGLE_CLOUD_PROJECT": "project-2",
    "LOCATION": "europe-west4",
    "MODEL": "gemini-x",
    "ALLOWED_MODELS": "a, b",
    "API_VERSION": "v1alpha",
    "UPSTREAM_URL": "ws://127.0.0.1:9001",
    "EMULATOR": "off",
    "HOST": "0.0.0.0",
    "PORT": "9000",
    "ALLOWED_ORIGINS": "https://app.example",
    "AUTH_PATHS": "/auth",
    "WS_PATHS": "/live",
    "AUTH_RATE_LIMIT": "5/second",
    "MAX_SESSIONS_PER_CLIENT": "3",
    "TRUSTED_PROXIES": "10.0.0.0/8",
    "LOG_LEVEL": "debug",
    "LOG_FORMAT": "json",
    "SESSION_TIME_LIMIT": "90",
    "SESSION_MIN_SECONDS": "30",
    "SESSION_MAX_SECONDS": "900",
    "TOKEN_TTL_SECONDS": "12.5",
    "MAX_SESSIONS": "7",
    "SETUP_TIMEOUT_SECONDS": "3",
    "MAX_MESSAGE_BYTES": "4096",
    "BROWSER_MESSAGE_RATE": "0",
    "REQUEST_BODY_TIMEOUT_SECONDS": "2",
    "WS_COMPRESSION": "yes",
    "BROWSER_QUEUE_BYTES": "8192",
    "UPSTREAM_BUFFER_BYTES": "4096",
    "CONTEXT_WINDOW_COMPRESSION": "0",
    "RECONNECT_ATTEMPTS": "0",
    "UPSTREAM_PING_INTERVAL_SECONDS": "0",
    "UPSTREAM_PONG_TIMEOUT_SECONDS": "5",
    "BROWSER_KEEPALIVE_SECONDS": "0",
    "BROWSER_TIMEOUT_SECONDS": "0",
    "SHUTDOWN_GRACE_SECONDS": "0",
    "WORKERS": "3",
    "STATE_URL": "memory",
    "SESSION_LEASE_SECONDS": "5",
    "RESUME_WINDOW_SECONDS": "0",
    "METRICS_BIND": "127.0.0.1:9464",
    "TOOLS_MODULES": "shop.tools, crm.tools",
    "TOOLS_FILE": "/etc/liveproxy/tools.toml",
    "SERVER_TOOLS": "get_time",
    "TOOL_THREADS": "2",
    "STATIC_DIR": str(DEMO_DIR),
    "USAGE_LOG": "/var/log/liveproxy/usage.jsonl",
    "PRICES_FILE": "/etc/liveproxy/prices.toml",
    "EPHEMERAL_UPSTREAM": "google",
    "ADMIN_BIND": "127.0.0.1:9465",
    "ADMIN_TOKEN": "t" * 32,
    "USAGE_RECORDS": "store",
    "USAGE_RETENTION_DAYS": "90",
    "BUDGET_PER_CLIENT": "60 minutes/day, 2000000 tokens/day",
    "BUDGET_TOTAL": "10000 minutes/month",
}
SIGNIN_SAMPLES = {
    "AUTH_JWT_SECRET": "s" * 32,
    "AUTH_JWKS_URL": "https://idp.example/jwks.json",
    "AUTH_JWT_AUDIENCE": "app",
    "AUTH_JWT_ISSUER": "idp",
}
BOT_CHECK_SAMPLES = {
    "BOT_CHECK": "turnstile",
    "BOT_CHECK_SECRET": "0x-secret-1",
    "BOT_CHECK_SITE_KEY": "0x-site-1",
    "BOT_CHECK_PROJECT": "project-9",
    "BOT_CHECK_ACTION": "SIGNUP",
    "BOT_CHECK_MIN_SCORE": "0.7",
    "BOT_CHECK_URL": "http://127.0.0.1:9999",
    "BOT_CHECK_HOSTNAMES": "App.example, www.app.example",
}
BOT_CHECK_PARSED = {
    "BOT_CHECK_MIN_SCORE": 0.7,
    "BOT_CHECK_HOSTNAMES": frozenset({"app.example", "www.app.example"}),
}
DECLARED = [(field, name) for field, where in env_settings(Config) for name in where.names]
#: What a variable needs set with it.
NEEDS = {"ADMIN_BIND": {"ADMIN_TOKEN": "t" * 32}}
BOT_CHECK_DECLARED = [
    (field, name) for field, where in env_settings(BotCheckSettings) for name in where.names
]
SIGNIN_DECLARED = [
    (field, name) for field, where in env_settings(SignInSettings) for name in where.names
]


def test_every_declared_variable_has_a_sample() -> None:
    assert sorted(SAMPLES) == sorted(name for _, name in DECLARED)
    assert sorted(SIGNIN_SAMPLES) == sorted(name for _, name in SIGNIN_DECLARED)
    assert sorted(BOT_CHECK_SAMPLES) == sorted(name for _, name in BOT_CHECK_DECLARED)
    # Settings that are not read from the environment have no variable.
    assert "upstream_max_message_bytes" not in {field for field, _ in DECLARED}


def test_tool_settings_keep_their_order_and_all_means_every_tool() -> None:
    config = from_env({"TOOLS_MODULES": "b.tools a.tools, b.tools", "SERVER_TOOLS": "all"})
    assert config.tools_modules == ("b.tools", "a.tools")
    assert config.server_tools is None
    assert from_env({"SERVER_TOOLS": "x, y"}).server_tools == frozenset({"x", "y"})


def test_the_environment_s_defaults_are_the_fields_defaults() -> None:
    assert from_env({}) == Config()


@pytest.mark.parametrize(("field", "name"), DECLARED)
def test_each_variable_sets_its_own_field(field: str, name: str) -> None:
    env = NEEDS.get(name, {})
    default, config = from_env(env), from_env(env | {name: SAMPLES[name]})
    changed = {
        f.name for f in attrs.fields(Config) if getattr(config, f.name) != getattr(default, f.name)
    }
    assert changed == {field}


@pytest.mark.parametrize(("field", "name"), SIGNIN_DECLARED)
def test_each_sign_in_variable_sets_its_own_field(field: str, name: str) -> None:
    # An audience or an issuer needs sign-in itself to be on.
    env = (
        {"AUTH_JWKS_URL": "https://other.example/jwks.json"}
        if name in ("AUTH_JWT_AUDIENCE", "AUTH_JWT_ISSUER")
        else {}
    )
    base = from_env(env).signin
    signin = from_env(env | {name: SIGNIN_SAMPLES[name]}).signin
    changed = {
        f.name
        for f in attrs.fields(SignInSettings)
        if getattr(signin, f.name) != getattr(base, f.name)
    }
    assert changed == {field}
    assert getattr(signin, field) == SIGNIN_SAMPLES[name]


@pytest.mark.parametrize(("field", "name"), BOT_CHECK_DECLARED)
def test_each_bot_check_variable_sets_its_own_field(field: str, name: str) -> None:
    env = {"BOT_CHECK": "recaptcha", "BOT_CHECK_SECRET": "s-0"}
    base = from_env(env).bot_check
    bot_check = from_env(env | {name: BOT_CHECK_SAMPLES[name]}).bot_check
    changed = {
        f.name
        for f in attrs.fields(BotCheckSettings)
        if getattr(bot_check, f.name) != getattr(base, f.name)
    }
    assert changed == {field}
    expected = BOT_CHECK_PARSED.get(name, BOT_CHECK_SAMPLES[name])
    assert getattr(bot_check, field) == expected


def test_the_bot_check_is_off_by_default_and_its_secret_never_shown() -> None:
    assert from_env({}).bot_check == BotCheckSettings()
    assert not from_env({}).bot_check.enabled
    config = from_env({"BOT_CHECK": "hcaptcha", "BOT_CHECK_SECRET": "0xSECRET-abc"})
    assert config.bot_check.provider == "hcaptcha"
    assert "0xSECRET-abc" not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BOT_CHECK": "captcha"}, "BOT_CHECK='captcha' is invalid: expected one of"),
        ({"BOT_CHECK": "turnstile"}, "BOT_CHECK=turnstile needs BOT_CHECK_SECRET"),
        (
            {"BOT_CHECK": "recaptcha-enterprise", "BOT_CHECK_SECRET": "k"},
            "needs BOT_CHECK_SITE_KEY and BOT_CHECK_PROJECT",
        ),
        ({"BOT_CHECK_SECRET": "k"}, "BOT_CHECK_SECRET is set but BOT_CHECK is not"),
        ({"BOT_CHECK_MIN_SCORE": "2"}, "expected a score from 0.0 to 1.0"),
        ({"BOT_CHECK_URL": "ftp://x"}, "expected an http:// or https:// URL"),
    ],
)
def test_a_bot_check_without_what_it_needs_is_a_clear_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
PADDING = st.text(alphabet=" \t", max_size=2)


def _mixed_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(word, up, strict=True))
    )


@settings(database=None, derandomize=True)
@given(
    word=st.sampled_from(TRUE_WORDS + FALSE_WORDS).flatmap(_mixed_case),
    pad=st.tuples(PADDING, PADDING),
)
def test_a_boolean_is_any_case_of_its_words(word: str, pad: tuple[str, str]) -> None:
    config = from_env({"WS_COMPRESSION": pad[0] + word + pad[1]})
    assert config.ws_compression is (word.lower() in TRUE_WORDS)


@settings(database=None, derandomize=True)
@given(seconds=st.floats(min_value=0, allow_infinity=False, allow_nan=False))
def test_seconds_are_read_back_exactly(seconds: float) -> None:
    assert from_env({"SHUTDOWN_GRACE_SECONDS": repr(seconds)}).shutdown_grace_seconds == seconds
    if seconds > 0:
        assert from_env({"TOKEN_TTL_SECONDS": repr(seconds)}).token_ttl_seconds == seconds
    else:
        with pytest.raises(ConfigError, match="TOKEN_TTL_SECONDS"):
            from_env({"TOKEN_TTL_SECONDS": repr(seconds)})


@settings(database=None, derandomize=True, max_examples=500)
@given(
    name=st.sampled_from(sorted(SAMPLES | SIGNIN_SAMPLES)),
    raw=st.text() | st.sampled_from(sorted({*SAMPLES.values(), *SIGNIN_SAMPLES.values()})),
)
def test_any_value_of_any_variable_is_read_or_refused_by_name(name: str, raw: str) -> None:
    try:
        from_env({name: raw})
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert name in message


@pytest.mark.parametrize("token", [None, "", "t" * 31, "é" * 15])
def test_the_admin_listener_needs_a_token_of_32_bytes(token: str | None) -> None:
    env = {"ADMIN_BIND": "127.0.0.1:0"} | ({} if token is None else {"ADMIN_TOKEN": token})
    with pytest.raises(ConfigError, match="ADMIN_BIND needs ADMIN_TOKEN of at least 32 bytes"):
        from_env(env)


def test_usage_records_go_to_the_store_with_the_admin_listener_unless_told() -> None:
    token = {"ADMIN_TOKEN": "é" * 16}  # 32 bytes
    assert not from_env({}).usage_records_in_store
    assert from_env({"ADMIN_BIND": "127.0.0.1:0", **token}).usage_records_in_store
    off = {"ADMIN_BIND": "127.0.0.1:0", "USAGE_RECORDS": "off", **token}
    assert not from_env(off).usage_records_in_store
    assert from_env({"USAGE_RECORDS": "STORE"}).usage_records_in_store
    with pytest.raises(ConfigError, match="USAGE_RECORDS"):
        from_env({"USAGE_RECORDS": "file"})
    assert "é" not in repr(from_env({"ADMIN_BIND": "127.0.0.1:0", **token}))
