"""The HTTP endpoints: /api/auth, /api/health, /api/status, error shapes."""

from __future__ import annotations

import pytest
import trio

import liveproxy
from liveproxy.store import StoreUnavailable, Usage
from tests.conftest import Proxy, ProxyFactory
from tests.models import TEST_MODEL, TEST_MODEL_STATUS


async def test_health_reports_the_servers_model_and_version(proxy: Proxy) -> None:
    response = await proxy.http("GET", "/api/health")
    assert response.status == 200
    assert response.json() == {
        "status": "ok",
        "model": TEST_MODEL,
        "version": liveproxy.__version__,
    }


async def test_status_with_credentials_is_advanced_and_names_no_secret(proxy: Proxy) -> None:
    response = await proxy.http("GET", "/api/status")
    assert response.json() == {
        "status": "ok",
        "mode": "advanced",
        "missing": [],
        "models": [TEST_MODEL_STATUS],
        "botCheck": None,
    }
    assert b"test-key" not in response.body


async def test_status_lists_the_default_model_then_the_allowed_ones_with_their_rules(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(
        model="gemini-3.8-live",
        allowed_models=frozenset(
            {"gemini-9-live-unknown", "gemini-3.8-live-extended-thinking", "gemini-3.8-live"}
        ),
    )
    models = (await proxy.http("GET", "/api/status")).json()["models"]
    assert models == [
        {
            "name": "gemini-3.8-live",
            "default": True,
            "outputs": ["AUDIO"],
            "thinkingLevels": [],  # any thinkingConfig is refused
            "interactionStatus": False,
        },
        {
            "name": "gemini-3.8-live-extended-thinking",
            "default": False,
            "outputs": ["AUDIO"],
            "thinkingLevels": ["LOW", "MEDIUM", "HIGH"],
            "interactionStatus": True,
        },
        {  # not in the proxy's table: passed on unchecked, nothing known of it
            "name": "gemini-9-live-unknown",
            "default": False,
            "outputs": None,
            "thinkingLevels": None,
            "interactionStatus": False,
        },
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, 180),
        (b"", 180),
        (b"{}", 180),
        (b'{"session_duration": 90}', 90),
        (b'{"sessionDuration": 90}', 90),
        (b'{"session_duration": 5}', 60),
        (b'{"session_duration": 100000}', 600),
        (b'{"session_duration": null}', 180),
    ],
)
async def test_auth_clamps_the_session_duration(
    proxy: Proxy, body: bytes | None, expected: int
) -> None:
    response = await proxy.http("POST", "/api/auth", body)
    assert response.status == 200
    data = response.json()
    assert data["session_time_limit"] == expected
    token = data["session_token"]
    assert len(token) >= 22  # >= 128 bits in URL-safe base64
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"90"', b'{"session_duration": "90"}', b'{"session_duration": 9.5}'],
)
async def test_auth_refuses_a_bad_body_with_the_error_shape(proxy: Proxy, body: bytes) -> None:
    response = await proxy.http("POST", "/api/auth", body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"]


async def test_auth_mints_a_fresh_token_each_time(proxy: Proxy) -> None:
    tokens = {await proxy.token() for _ in range(5)}
    assert len(tokens) == 5


async def test_unknown_paths_and_methods_answer_in_the_error_shape(proxy: Proxy) -> None:
    missing = await proxy.http("GET", "/api/nope")
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = await proxy.http("GET", "/api/auth")
    assert wrong_method.status == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_auth_answers_503_at_capacity_counting_valid_tokens(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(max_sessions=2, token_ttl_seconds=30)
    await proxy.token()
    await proxy.token()
    refused = await proxy.http("POST", "/api/auth")
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "at_capacity"
    await trio.sleep(31)  # the unused tokens expire and stop counting
    assert (await proxy.http("POST", "/api/auth")).status == 200


async def test_an_unexpected_failure_answers_500_in_the_error_shape(proxy: Proxy) -> None:
    async def broken(*args: object) -> str:
        raise RuntimeError("boom")

    proxy.state.store.admit = broken  # type: ignore[method-assign,assignment]  # fault injection
    response = await proxy.http("POST", "/api/auth")
    assert response.status == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "the server failed to answer this request"}
    }
    assert "boom" not in response.body.decode()


async def test_ready_is_200_until_draining_or_full(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_sessions=2)
    ready = await proxy.http("GET", "/api/ready")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
    await proxy.token()
    assert (await proxy.http("GET", "/api/ready")).status == 200
    await proxy.token()  # unused tokens hold places too: nothing more can be admitted
    full = await proxy.http("GET", "/api/ready")
    assert full.status == 503
    assert full.json() == {"error": {"code": "not_ready", "message": "at capacity"}}
    proxy.state.draining = True
    draining = await proxy.http("GET", "/api/ready")
    assert draining.json()["error"]["message"] == "draining"


async def test_ready_is_503_when_the_store_cannot_answer(proxy: Proxy) -> None:
    async def unreachable() -> Usage:
        raise StoreUnavailable("connection refused")

    proxy.state.store.usage = unreachable  # type: ignore[method-assign]  # fault injection
    answer = await proxy.http("GET", "/api/ready")
    assert answer.status == 503
    assert answer.json()["error"]["message"] == "state store unreachable"
    assert (await proxy.http("GET", "/api/health")).status == 200  # still alive


async def test_ready_is_503_when_no_upstream_can_work(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(api_key=None, upstream_url=None, use_emulator=False)
    assert (await proxy.http("GET", "/api/status")).json()["mode"] == "simple"
    answer = await proxy.http("GET", "/api/ready")
    assert (answer.status, answer.json()["error"]) == (
        503,
        {"code": "not_ready", "message": "no upstream configured"},
    )


@pytest.mark.parametrize(
    "path", ["/demo/app.js%00.png", "/demo/%00", "/demo/" + "a" * 5000 + ".js", "/demo/.x"]
)
async def test_a_static_name_the_os_refuses_is_404(proxy: Proxy, path: str) -> None:
    answer = await proxy.http("GET", path)
    assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found")


async def test_the_demo_page_is_at_demo_and_the_root_leads_there(proxy: Proxy) -> None:
    page = await proxy.http("GET", "/demo/")
    assert (page.status, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert page.headers["cache-control"] == "no-cache"
    assert b'src="app.js"' in page.body  # its files beside it, relative
    script = await proxy.http("GET", "/demo/session.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b'get("server") ?? ".."' in script.body  # the API one level up
    # Without STATIC_DIR the root is the demo page's (relative, so it works under a prefix).
    for path, location in [
        ("/", "demo/"),
        ("/?server=http://other:8000/", "demo/?server=http://other:8000/"),
        ("/demo", "demo/"),
    ]:
        answer = await proxy.http("GET", path)
        assert (answer.status, answer.headers["location"]) == (302, location)
    assert (await proxy.http("GET", "/static/app.js")).status == 404
    assert (await proxy.http("GET", "/orders/17")).status == 404
