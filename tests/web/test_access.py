"""Who may open a session: the origin rule, CORS, tokens bound to their origin, path aliases.

Real Hypercorn on port 0 with the real emulator; the pure origin rule has sync tests too.
"""

from __future__ import annotations

from ipaddress import ip_network

import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.web.origins import OriginPolicy
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.fuzz.wire import upgrade_request
from tests.http import HttpResponse, request
from tests.rawws import open_raw, read_answer
from tests.wsclient import BrowserClient, Ended, has_key

DEV = "http://localhost:5173"
EVIL = "https://evil.example"


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://localhost:5173", "proxy.example", True),
        ("https://127.0.0.1:8443", None, True),
        ("http://[::1]:3000", None, True),
        ("http://10.0.0.5:8000", "10.0.0.5:8000", True),  # its own address: no DNS involved
        ("http://[2001:db8::1]:8000", "[2001:db8::1]:8000", True),
        ("https://evil.example", "app.example.com", False),
        ("https://localhost.evil.example", None, False),
        ("null", None, False),
        ("file://", None, False),
        ("http://[::1", None, False),  # malformed: refused, never an exception
        ("http://[zz]:80", None, False),
        ("%%%", "%%%", False),
    ],
)
def test_the_default_origin_rule(origin: str, host: str | None, allowed: bool) -> None:
    assert OriginPolicy().allows(origin, host) is allowed


@pytest.mark.parametrize(
    ("policy", "peer", "allowed"),
    [
        (OriginPolicy(), "127.0.0.1", False),  # a DNS rebinding against a developer's server
        (OriginPolicy(public=True), "203.0.113.9", True),  # it listens beyond loopback
        (OriginPolicy(trusted_proxies=(ip_network("127.0.0.1/32"),)), "127.0.0.1", True),
        (OriginPolicy(trusted_proxies=(ip_network("10.0.0.0/8"),)), "127.0.0.1", False),
    ],
    ids=["loopback-direct", "public", "through-a-trusted-proxy", "not-through-it"],
)
def test_a_host_that_is_a_name_is_the_servers_own_only_where_no_rebinding_can_forge_it(
    policy: OriginPolicy, peer: str, allowed: bool
) -> None:
    for origin, host in (
        ("https://app.example.com", "app.example.com"),
        ("http://evil.example:8000", "evil.example:8000"),
    ):
        assert policy.allows(origin, host, peer) is allowed


def test_a_list_allows_exactly_its_origins_and_star_allows_any() -> None:
    listed = OriginPolicy(frozenset({"https://app.example.com"}))
    assert listed.allows("https://app.example.com", None)
    assert not listed.allows("http://localhost:5173", None)
    assert OriginPolicy(frozenset({"*"})).allows("null", None)


async def http(proxy: Proxy, method: str, path: str, origin: str | None, **kw: str) -> HttpResponse:
    headers = {"Origin": origin} if origin is not None else {}
    if method == "OPTIONS":
        headers |= {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        }
    body = b"" if method == "POST" else None
    return await request("127.0.0.1", proxy.port, method, path, body, headers | kw)


async def test_a_preflight_from_an_allowed_origin_gets_exactly_the_cors_headers(
    proxy: Proxy,
) -> None:
    response = await http(proxy, "OPTIONS", "/api/auth", DEV)
    assert response.status == 204
    cors = {
        k: v for k, v in response.headers.items() if k.startswith("access-control") or k == "vary"
    }
    assert cors == {
        "access-control-allow-origin": DEV,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": "Content-Type, Authorization",
        "access-control-max-age": "600",
        "vary": "Origin",
    }


async def test_a_disallowed_origin_is_403_with_no_cors_headers(proxy: Proxy) -> None:
    preflight = await http(proxy, "OPTIONS", "/api/auth", EVIL)
    auth = await http(proxy, "POST", "/api/auth", EVIL)
    for response in (preflight, auth):
        assert response.status == 403
        assert response.json()["error"]["code"] == "forbidden_origin"
        assert not any(k.startswith("access-control") for k in response.headers)
    assert (await proxy.state.store.usage()).tokens == 0


async def test_allowed_answers_carry_the_origin_and_requests_without_one_are_not_subject(
    proxy: Proxy,
) -> None:
    auth = await http(proxy, "POST", "/api/auth", DEV)
    assert auth.status == 200
    assert (auth.headers["access-control-allow-origin"], auth.headers["vary"]) == (DEV, "Origin")
    health = await http(proxy, "GET", "/api/health", DEV)
    assert health.headers["access-control-allow-origin"] == DEV
    curl = await http(proxy, "POST", "/api/auth", None)
    assert curl.status == 200
    assert "access-control-allow-origin" not in curl.headers


async def test_the_servers_own_origin_is_allowed_behind_a_proxy(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(trusted_proxies=(ip_network("127.0.0.1/32"),))
    response = await http(
        proxy, "POST", "/api/auth", "https://app.example.com", Host="app.example.com"
    )
    assert response.status == 200


async def test_a_dns_rebinding_page_is_refused_by_a_loopback_server(proxy: Proxy) -> None:
    # evil.example resolves to 127.0.0.1 by now: the browser sends its own name as the Host.
    rebound = await http(
        proxy, "POST", "/api/auth", "http://evil.example:8000", Host="evil.example:8000"
    )
    assert (rebound.status, rebound.json()["error"]["code"]) == (403, "forbidden_origin")
    request = upgrade_request(f"/ws?token={await proxy.token()}", "evil.example:8000")
    stream = await open_raw(proxy.port)  # nor can its socket start a session
    async with stream:
        await stream.send_all(request[:-2] + b"Origin: http://evil.example:8000\r\n\r\n")
        with trio.fail_after(5):
            answer = await read_answer(stream)
    assert answer.close_code == 4003


async def test_star_allows_any_origin_and_a_list_only_its_own(make_proxy: ProxyFactory) -> None:
    anyone = await make_proxy(allowed_origins=frozenset({"*"}))
    assert (await http(anyone, "POST", "/api/auth", EVIL)).status == 200
    listed = await make_proxy(allowed_origins=frozenset({"https://app.example.com"}))
    assert (await http(listed, "POST", "/api/auth", "https://app.example.com")).status == 200
    assert (await http(listed, "POST", "/api/auth", DEV)).status == 403


async def token_from(proxy: Proxy, origin: str | None, path: str = "/api/auth") -> str:
    response = await http(proxy, "POST", path, origin)
    assert response.status == 200, response.body
    token: str = response.json()["session_token"]
    return token


async def open_ws(proxy: Proxy, token: str, origin: str | None, path: str = "/ws") -> Ended:
    """Open a socket, send a setup, and read until the proxy closes it (or a turn answers)."""
    extra = [(b"Origin", origin.encode())] if origin is not None else []
    url = f"ws://127.0.0.1:{proxy.port}{path}?token={token}"
    async with open_websocket_url(url, extra_headers=extra) as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        with trio.fail_after(10):
            return await client.wait_closed()


@pytest.mark.parametrize("origin", ["http://[::1", "http://[zz]:80", "x" * 4000])
async def test_a_malformed_origin_is_refused_not_a_crash(proxy: Proxy, origin: str) -> None:
    assert (await http(proxy, "POST", "/api/auth", origin)).status == 403
    ended = await open_ws(proxy, await token_from(proxy, None), origin)
    assert (ended.code, ended.reason) == (4003, "Forbidden origin")


async def test_a_disallowed_origins_socket_is_closed_4003_forbidden_origin(proxy: Proxy) -> None:
    ended = await open_ws(proxy, await token_from(proxy, None), EVIL)
    assert (ended.code, ended.reason, ended.frames) == (4003, "Forbidden origin", [])


async def test_a_token_is_bound_to_the_origin_that_minted_it(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(allowed_origins=frozenset({DEV, "https://app.example.com"}))
    elsewhere = await open_ws(proxy, await token_from(proxy, DEV), "https://app.example.com")
    assert (elsewhere.code, elsewhere.reason) == (4003, "Unauthorized")
    not_a_browser = await open_ws(proxy, await token_from(proxy, DEV), None)
    assert not_a_browser.code == 4003
    async with open_websocket_url(
        proxy.ws_url(await token_from(proxy, DEV)), extra_headers=[(b"Origin", DEV.encode())]
    ) as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()


async def test_auth_and_ws_path_aliases_serve_a_whole_session(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(
        auth_paths=("/api/auth", "/api/v1/gemini-live/auth"),
        ws_paths=("/ws", "/api/v1/gemini-live/ws"),
    )
    token = await token_from(proxy, DEV, "/api/v1/gemini-live/auth")
    url = f"ws://127.0.0.1:{proxy.port}/api/v1/gemini-live/ws?token={token}"
    async with open_websocket_url(url, extra_headers=[(b"Origin", DEV.encode())]) as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()
        await client.send_json({"type": "text", "text": "through the gateway paths"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
    preflight = await http(proxy, "OPTIONS", "/api/v1/gemini-live/auth", DEV)
    assert preflight.status == 204
    assert (await http(proxy, "POST", "/api/v1/gemini-live/auth", EVIL)).status == 403
