"""Bot checks on ``POST /api/auth`` through a real proxy, against a local fake verifier per
provider: a real HTTP server (trio + h11) that checks the request shape each provider's docs
give and answers in the documented shape."""

from __future__ import annotations

import json
import logging
import re
import socket
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import pytest
import trio

from liveproxy.config import BotCheckSettings, BotProvider
from tests.conftest import Proxy, ProxyFactory
from tests.http import HttpResponse

SECRET = "0xSECRET-bot-check-7f3a9c"
SITE_KEY = "site-key-1"
PROJECT = "project-9"
PROVIDERS: list[BotProvider] = ["recaptcha-enterprise", "recaptcha", "turnstile", "hcaptcha"]
PATHS = {
    "recaptcha-enterprise": f"/v1/projects/{PROJECT}/assessments",
    "recaptcha": "/recaptcha/api/siteverify",
    "turnstile": "/turnstile/v0/siteverify",
    "hcaptcha": "/siteverify",
}


@attrs.define
class Verifier:
    """A provider's verifier. Tokens say what to answer: ``good...`` (accepted once: a second
    use is a duplicate), ``expired``, ``invalid``, ``action``, ``host``, ``low``,
    ``malformed``, ``html``, ``down500``, ``slow``, ``badsecret``."""

    provider: BotProvider
    port: int = 0
    requests: list[dict[str, Any]] = attrs.Factory(list)
    seen: set[str] = attrs.Factory(set)

    def check(self, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | str:
        """The request's fields, or what is wrong with its shape."""
        url = urlsplit(target)
        if url.path != PATHS[self.provider]:
            return f"path {url.path}"
        kind = headers.get("content-type", "")
        if self.provider == "recaptcha-enterprise":
            if parse_qs(url.query) != {"key": [SECRET]} or kind != "application/json":
                return "no key or not JSON"
            event = json.loads(body)["event"]
            if event["siteKey"] != SITE_KEY or event["expectedAction"] != "LOGIN":
                return "site key or action"
            if event["userIpAddress"] != "127.0.0.1":
                return "user ip"
            return {"token": event["token"]}
        if kind != "application/x-www-form-urlencoded":
            return f"content type {kind}"
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        expected = {"secret", "response", "remoteip"} | (
            {"sitekey"} if self.provider == "hcaptcha" else set()
        )
        if set(form) != expected or form["remoteip"] != "127.0.0.1":
            return f"fields {sorted(form)}"
        if self.provider == "hcaptcha" and form["sitekey"] != SITE_KEY:
            return "sitekey"
        if form["secret"] != SECRET and form["response"] != "badsecret":
            return "secret"
        return {"token": form["response"]}

    def answer(self, token: str) -> dict[str, Any]:
        """The documented answer for ``token``."""
        if token.startswith("good") and token in self.seen:
            token = "dupe"
        self.seen.add(token)
        hostname = "evil.example" if token == "host" else "127.0.0.1"
        action = "SIGNUP" if token == "action" else "LOGIN"
        score = 0.1 if token == "low" else 0.9
        refused = token in ("expired", "invalid", "dupe", "badsecret")
        if self.provider == "recaptcha-enterprise":
            reasons = {"expired": "EXPIRED", "invalid": "MALFORMED", "dupe": "DUPE"}
            properties: dict[str, Any] = {"createTime": "2026-01-01T00:00:00Z"}
            if refused:  # proto3 JSON: false is left out
                properties["invalidReason"] = reasons.get(token, "UNKNOWN_INVALID_REASON")
            else:
                properties |= {"valid": True, "action": action, "hostname": hostname}
            return {
                "name": f"projects/{PROJECT}/assessments/1",
                "event": {"token": token, "siteKey": SITE_KEY, "expectedAction": "LOGIN"},
                "riskAnalysis": {"score": score, "reasons": []},
                "tokenProperties": properties,
            }
        if refused:
            codes = {
                "expired": "timeout-or-duplicate",
                "dupe": "timeout-or-duplicate",
                "invalid": "invalid-input-response",
                "badsecret": "invalid-input-secret",
            }
            code = codes[token]
            if self.provider == "hcaptcha" and token in ("expired", "dupe"):
                code = "invalid-or-already-seen-response"
            return {"success": False, "error-codes": [code]}
        base = {"success": True, "challenge_ts": "2026-01-01T00:00:00Z", "hostname": hostname}
        if self.provider == "recaptcha":
            return base | {"score": score, "action": action, "error-codes": []}
        if self.provider == "turnstile":
            return base | {"action": action, "cdata": "", "error-codes": []}
        risk = 0.9 if token == "low" else 0.1  # hCaptcha Enterprise: a risk score
        return base | {"credit": False, "score": risk, "score_reason": []}


async def _serve(verifier: Verifier, stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    target, headers, body = "", {}, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some()
            if not data:
                return
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            target = event.target.decode()
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    checked = verifier.check(target, headers, body)
    verifier.requests.append({"target": target, "body": body, "checked": checked})

    async def answer(status: int, content: bytes, kind: str = "application/json") -> None:
        head = [("Content-Type", kind), ("Content-Length", str(len(content)))]
        data = connection.send(h11.Response(status_code=status, headers=head))
        data += connection.send(h11.Data(data=content)) + connection.send(h11.EndOfMessage())
        await stream.send_all(data)

    if isinstance(checked, str):
        await answer(400, json.dumps({"error": checked}).encode())
        return
    token = checked["token"]
    if token == "slow":
        await trio.sleep_forever()
    elif token == "down500":
        await answer(500, b'{"error": "internal"}')
    elif token == "html":
        await answer(200, b"<html>busy</html>", "text/html")
    elif token == "malformed":
        await answer(200, b'{"answer": 42}')
    else:
        await answer(200, json.dumps(verifier.answer(token)).encode())


async def start_verifier(nursery: trio.Nursery, provider: BotProvider) -> Verifier:
    verifier = Verifier(provider)
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_serve, verifier), 0, host="127.0.0.1")
    )
    verifier.port = listeners[0].socket.getsockname()[1]
    return verifier


def settings(provider: BotProvider, url: str, **more: Any) -> BotCheckSettings:
    return BotCheckSettings(
        provider=provider,
        secret=SECRET,
        site_key=SITE_KEY,
        project=PROJECT,
        url=url,
        timeout_seconds=0.5,
        **more,
    )


async def start_checked(
    nursery: trio.Nursery, make_proxy: ProxyFactory, provider: BotProvider
) -> tuple[Proxy, Verifier]:
    """A fake verifier of ``provider``, and a proxy that checks sign-ins with it."""
    verifier = await start_verifier(nursery, provider)
    proxy = await make_proxy(
        bot_check=settings(provider, f"http://127.0.0.1:{verifier.port}"),
    )
    return proxy, verifier


@pytest.fixture(params=PROVIDERS)
async def checked(
    request: pytest.FixtureRequest, nursery: trio.Nursery, make_proxy: ProxyFactory
) -> tuple[Proxy, Verifier]:
    return await start_checked(nursery, make_proxy, request.param)


async def sign_in(proxy: Proxy, token: str | None, name: str = "recaptcha_token") -> HttpResponse:
    body = b"{}" if token is None else json.dumps({name: token}).encode()
    return await proxy.http("POST", "/api/auth", body)


def error(response: HttpResponse) -> tuple[int, str, str]:
    found = response.json()["error"]
    return response.status, found["code"], found["message"]


async def test_a_good_token_gets_a_session_token_by_either_name(
    checked: tuple[Proxy, Verifier],
) -> None:
    proxy, verifier = checked
    first = await sign_in(proxy, "good-1")
    second = await sign_in(proxy, "good-2", name="bot_token")
    assert (first.status, second.status) == (200, 200), (first.body, second.body)
    assert "session_token" in first.json()
    assert [r["checked"] for r in verifier.requests] == [{"token": "good-1"}, {"token": "good-2"}]


@pytest.mark.parametrize(
    ("provider", "token", "words"),
    [
        (provider, token, words)
        for provider in PROVIDERS
        for token, words in [
            ("expired", "expired|already used"),  # hCaptcha: one code for both
            ("invalid", "invalid|malformed"),
            ("action", r"for another action \(SIGNUP, not LOGIN\)"),
            ("host", r"made on another site \(evil\.example\)"),
            ("low", "below the minimum 0.5"),
        ]
        # hCaptcha has no action; Turnstile has no score.
        if (provider, token) not in {("hcaptcha", "action"), ("turnstile", "low")}
    ],
)
async def test_a_refused_token_is_403_bot_check_failed_saying_why(
    nursery: trio.Nursery, make_proxy: ProxyFactory, provider: BotProvider, token: str, words: str
) -> None:
    proxy, verifier = await start_checked(nursery, make_proxy, provider)
    status, code, message = error(await sign_in(proxy, token))
    assert (status, code) == (403, "bot_check_failed")
    assert re.search(words, message), message
    assert isinstance(verifier.requests[0]["checked"], dict)  # the request had its shape


async def test_a_reused_token_is_refused(checked: tuple[Proxy, Verifier]) -> None:
    proxy, _ = checked
    assert (await sign_in(proxy, "good-once")).status == 200
    status, code, message = error(await sign_in(proxy, "good-once"))
    assert (status, code) == (403, "bot_check_failed")
    assert "already used" in message or "already seen" in message or "duplicate" in message


@pytest.mark.parametrize(
    ("provider", "token", "words"),
    [
        (provider, token, words)
        for provider in PROVIDERS
        for token, words in [
            ("malformed", "the verifier's answer"),
            ("html", "not JSON"),
            ("down500", "HTTP 500"),
            ("slow", "did not answer within 0.5 s"),
            ("badsecret", "refused this server's request"),
        ]
        # Enterprise refuses a bad API key with an HTTP error (as down500).
        if (provider, token) != ("recaptcha-enterprise", "badsecret")
    ],
)
async def test_a_verifier_without_a_usable_verdict_is_503_fail_closed(
    nursery: trio.Nursery, make_proxy: ProxyFactory, provider: BotProvider, token: str, words: str
) -> None:
    proxy, _ = await start_checked(nursery, make_proxy, provider)
    with trio.fail_after(5):
        response = await sign_in(proxy, token)
    status, code, message = error(response)
    assert (status, code) == (503, "bot_check_unavailable")
    assert words in message
    assert SECRET not in message


async def test_a_verifier_that_is_down_is_503(make_proxy: ProxyFactory) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy = await make_proxy(bot_check=settings("turnstile", f"http://127.0.0.1:{port}"))
    status, code, message = error(await sign_in(proxy, "good"))
    assert (status, code) == (503, "bot_check_unavailable")
    assert "could not be reached (ConnectError)" in message


async def test_no_token_is_400_and_the_verifier_is_not_asked(
    checked: tuple[Proxy, Verifier],
) -> None:
    proxy, verifier = checked
    for body in (b"", b"{}", b'{"session_duration": 90}'):
        status, code, _ = error(await proxy.http("POST", "/api/auth", body))
        assert (status, code) == (400, "bot_check_required")
    assert verifier.requests == []


async def test_a_resume_needs_no_bot_token(checked: tuple[Proxy, Verifier]) -> None:
    proxy, verifier = checked
    response = await proxy.http("POST", "/api/auth", json.dumps({"resume": "r" * 43}).encode())
    assert error(response)[:2] == (404, "resume_not_found")
    assert verifier.requests == []


async def test_the_rate_limit_comes_before_the_verifier(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    verifier = await start_verifier(nursery, "recaptcha")
    proxy = await make_proxy(
        bot_check=settings("recaptcha", f"http://127.0.0.1:{verifier.port}"),
        auth_rate_limit=(3, 3600.0),
    )
    answers = [(await sign_in(proxy, f"good-{i}")).status for i in range(10)]
    assert answers == [200, 200, 200] + [429] * 7
    assert len(verifier.requests) == 3


async def test_hostnames_come_from_the_setting_or_the_allowed_origins(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    verifier = await start_verifier(nursery, "turnstile")
    url = f"http://127.0.0.1:{verifier.port}"
    listed = await make_proxy(
        bot_check=settings("turnstile", url, hostnames=frozenset({"evil.example"}))
    )
    assert (await sign_in(listed, "host")).status == 200
    assert error(await sign_in(listed, "good"))[1] == "bot_check_failed"
    origins = await make_proxy(
        bot_check=settings("turnstile", url),
        allowed_origins=frozenset({"https://evil.example:8443"}),
    )
    assert (await sign_in(origins, "host")).status == 200


async def test_the_secret_is_in_no_log_line_and_status_names_the_provider(
    nursery: trio.Nursery, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = await start_verifier(nursery, "recaptcha-enterprise")
    proxy = await make_proxy(
        bot_check=settings("recaptcha-enterprise", f"http://127.0.0.1:{verifier.port}"),
    )
    for token in ("good", "expired", "malformed", "down500", "slow"):
        await sign_in(proxy, token)
    status = await proxy.http("GET", "/api/status")
    assert status.json()["botCheck"] == {"provider": "recaptcha-enterprise", "siteKey": SITE_KEY}
    assert SECRET.encode() not in status.body
    assert any("bot check failed" in r.getMessage() for r in caplog.records)
    assert any("bot check unavailable" in r.getMessage() for r in caplog.records)
    assert any(r.name == "httpx" for r in caplog.records)  # its request lines were there
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage()
