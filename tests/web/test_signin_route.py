"""Sign-in on the auth route, on real sockets: 401 for each refusal, the JWT's subject as client."""

from __future__ import annotations

import secrets
import time

import jwt

from liveproxy.config import SignInSettings
from tests.conftest import Proxy, ProxyFactory
from tests.http import HttpResponse, request

SECRET = secrets.token_urlsafe(32)


def token(sub: str = "user-1", **claims: object) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def auth(proxy: Proxy, authorization: str | None, source: str = "127.0.0.1") -> HttpResponse:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return await request(
        "127.0.0.1", proxy.port, "POST", "/api/auth", b"", headers, local_address=source
    )


async def signed_in(make_proxy: ProxyFactory, **settings: object) -> Proxy:
    return await make_proxy(
        signin=SignInSettings(jwt_secret=SECRET, audience="app"), auth_rate_limit=None, **settings
    )


async def test_without_a_valid_jwt_auth_is_401_with_www_authenticate(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await signed_in(make_proxy)
    forged = jwt.encode({"sub": "x", "aud": "app", "exp": int(time.time()) + 60}, "w" * 32)
    cases = {
        None: "sign-in required",
        "Basic dXNlcjpwdw==": "not a Bearer token",
        "Bearer not.a.jwt": "malformed",
        f"Bearer {token(aud='app', exp=int(time.time()) - 600)}": "expired",
        f"Bearer {token(aud='other')}": "another audience",
        f"Bearer {forged}": "signature",
    }
    for authorization, reason in cases.items():
        response = await auth(proxy, authorization)
        assert response.status == 401, authorization
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert reason in error["message"]
    assert (await proxy.state.store.usage()).tokens == 0


async def test_claims_json_cannot_carry_are_401_not_500(make_proxy: ProxyFactory) -> None:
    """Found by the fuzzer: a signed JWT whose claims held a lone surrogate (its ``sub`` too),
    an integer over 64 bits or nesting past 255 levels made the sign-in a 500 with a logged
    traceback (the claims are kept as JSON, and orjson refuses those)."""
    proxy = await signed_in(make_proxy)
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    cases: list[tuple[str, dict[str, object]]] = [
        ("\ud800", {}),
        ("user", {"name": "\udfff"}),
        ("user", {"n": 2**70}),
        ("user", {"deep": deep}),
    ]
    for sub, claims in cases:
        response = await auth(proxy, f"Bearer {token(sub, aud='app', **claims)}")
        assert response.status == 401, claims
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert "claims" in error["message"]
    assert (await proxy.state.store.usage()).tokens == 0


async def test_a_valid_jwt_gets_a_token_and_its_subject_is_the_client(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await signed_in(make_proxy, max_sessions_per_client=2)
    alice = f"Bearer {token('alice', aud='app')}"
    assert (await auth(proxy, alice)).status == 200
    assert (await auth(proxy, alice, source="127.0.0.2")).status == 200  # same user, other IP
    refused = await auth(proxy, alice, source="127.0.0.3")
    assert refused.json()["error"]["code"] == "too_many_sessions"
    bob = f"Bearer {token('bob', aud='app')}"
    assert (await auth(proxy, bob)).status == 200  # same IP, other user


async def test_without_sign_in_configured_the_header_is_ignored(proxy: Proxy) -> None:
    assert (await auth(proxy, "Bearer garbage")).status == 200
