"""Google's ephemeral tokens in the emulator: ``POST /v1alpha/auth_tokens`` mints them (as the
google-genai SDK sends it), ``BidiGenerateContentConstrained`` admits them by Google's rules.

SDK scenarios run in a worker thread on the real clock (as in ``test_sdk.py``); the rules of
time run on trio's mock clock (rate 0: time moves only when a test jumps it), which moves the
emulator's view of wall time too (:meth:`Emulator.wall_time`).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trustme
from google import genai
from google.genai import errors, types

from liveproxy.emulator import Emulator
from liveproxy.emulator.rest import MAX_HEAD_BYTES
from liveproxy.emulator.tokens import (
    MAX_AHEAD_SECONDS,
    TOKEN_INVALID,
    BadTokenRequest,
    Token,
    TokenBook,
    TokenRequest,
    parse_rfc3339,
    read_token_request,
    rfc3339,
)
from liveproxy.protocol.closes import (
    API_KEY_INVALID,
    DEADLINE_EXPIRED,
    UNREGISTERED_CALLER,
    truncate_reason,
)
from tests.genai_sdk import in_asyncio
from tests.http import HttpResponse, request
from tests.wsclient import wait_until

from .helpers import (
    TEXT_MODEL,
    close_reason,
    connect,
    model_text,
    open_session,
    receive,
    send,
    start,
    until_turn_complete,
)
from .test_sdk import KEY, start_tls

CONSTRAINED = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
PLAIN = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
TEXT = {"responseModalities": ["TEXT"]}

pytestmark = pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")


async def mint_raw(
    emulator: Emulator, body: dict[str, Any] | bytes, key: str | None = KEY, **options: Any
) -> HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {} if key is None else {"x-goog-api-key": key}
    path = options.pop("path", "/v1alpha/auth_tokens")
    return await request(
        "127.0.0.1", emulator.port, options.pop("method", "POST"), path, raw, headers
    )


async def mint(emulator: Emulator, **body: Any) -> str:
    response = await mint_raw(emulator, body)
    assert response.status == 200, response.body
    answer = response.json()
    assert set(answer) == {"name"}  # Google's other fields are input only
    name: str = answer["name"]
    return name


async def text_turn(token: str, emulator: Emulator, text: str, **setup: Any) -> str:
    """One session on the constrained path with ``token``: a text turn, what the model said."""
    async with connect(emulator, f"{CONSTRAINED}?access_token={token}") as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig=TEXT, **setup)
        await send(ws, {"realtimeInput": {"text": text}})
        return model_text(await until_turn_complete(ws))


async def refused(emulator: Emulator, path: str, **setup: Any) -> tuple[int, str | None]:
    async with connect(emulator, path) as ws:
        await send(ws, {"setup": {"model": TEXT_MODEL, "generationConfig": TEXT, **setup}})
        reason = await close_reason(ws)
    return reason.code, reason.reason


# The SDK ---------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    """A CA and a certificate for 127.0.0.1 (the SDK speaks only TLS)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(cert), append=index > 0)
    issued.private_key_pem.write_to_path(str(key))
    return ca, cert, key


def sdk_client(emulator: Emulator, context: ssl.SSLContext, key: str) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(
            api_version="v1alpha",
            base_url=f"https://127.0.0.1:{emulator.port}",
            async_client_args={"ssl": context, "verify": context},
        ),
    )


async def test_the_sdk_mints_a_token_and_holds_a_conversation_with_it(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> tuple[str, str, errors.APIError]:
        token = await sdk_client(emulator, context, KEY).aio.auth_tokens.create(
            config=types.CreateAuthTokenConfig(
                uses=1,
                live_connect_constraints=types.LiveConnectConstraints(
                    model=TEXT_MODEL,
                    config=types.LiveConnectConfig(response_modalities=[types.Modality.TEXT]),
                ),
            )
        )
        assert token.name is not None
        browser = sdk_client(emulator, context, token.name)
        async with browser.aio.live.connect(model=TEXT_MODEL) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "hi"}]})
            said = "".join([m.text or "" async for m in session.receive()])
        with pytest.raises(errors.APIError) as spent:
            async with browser.aio.live.connect(model=TEXT_MODEL):
                pass
        return token.name, said, spent.value

    name, said, spent = await in_asyncio(scenario)
    assert name.startswith("auth_tokens/")
    assert said == 'You said: "hi"'
    assert (spent.code, spent.details) == (1007, TOKEN_INVALID)  # one use only
    first, second = emulator.connections
    assert (first.path, first.credential, first.credential_kind) == (CONSTRAINED, name, "token")
    assert first.token == name
    assert second.close_code == 1007
    token = emulator.tokens.get(name)
    assert token is not None
    assert token.request.setup == {
        "model": f"models/{TEXT_MODEL.removeprefix('models/')}",
        "generationConfig": TEXT,
    }
    assert token.request.field_mask is None  # no lock_additional_fields: all locked


async def test_the_sdks_lock_additional_fields_becomes_a_field_mask_that_holds(
    nursery: trio.Nursery, certificate: tuple[trustme.CA, Path, Path]
) -> None:
    emulator, context = await start_tls(nursery, certificate)

    async def scenario() -> None:
        token = await sdk_client(emulator, context, KEY).aio.auth_tokens.create(
            config=types.CreateAuthTokenConfig(
                uses=0,
                live_connect_constraints=types.LiveConnectConstraints(
                    model=TEXT_MODEL,
                    config=types.LiveConnectConfig(
                        response_modalities=[types.Modality.TEXT], temperature=0.2
                    ),
                ),
                lock_additional_fields=["top_k"],
            )
        )
        assert token.name is not None
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.TEXT],
            temperature=0.9,  # locked: the token's 0.2 wins
            top_k=5,  # locked, and the token sets none: removed
            top_p=0.5,  # not locked: the client's stays
            system_instruction="be brief",
        )
        browser = sdk_client(emulator, context, token.name)
        async with browser.aio.live.connect(model=TEXT_MODEL, config=config):
            pass

    await in_asyncio(scenario)
    (record,) = emulator.connections
    await record.wait_closed()
    assert record.setup is not None
    assert record.setup["generationConfig"] == {
        "responseModalities": ["TEXT"],
        "temperature": 0.2,
        "topP": 0.5,
    }
    assert record.setup["systemInstruction"] == {"parts": [{"text": "be brief"}], "role": "user"}
    assert record.sent[0] == {"setupComplete": {}}


# Minting: Google's answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "options", "status", "message"),
    [
        ({}, None, {}, 403, UNREGISTERED_CALLER),
        ({}, "wrong-key", {}, 400, API_KEY_INVALID),
        ({}, "auth_tokens/x", {}, 400, API_KEY_INVALID),
        ({"voice": "Puck"}, KEY, {}, 400, 'Unknown name "voice"'),
        (b"[1]", KEY, {}, 400, "Expected an object"),
        (b"{", KEY, {}, 400, "Invalid JSON payload"),
        ({"uses": -1}, KEY, {}, 400, "'uses'"),
        ({"uses": True}, KEY, {}, 400, "'uses'"),
        ({"expireTime": "tomorrow"}, KEY, {}, 400, "google.protobuf.Timestamp"),
        ({"expireTime": "2030-01-01T00:00:00"}, KEY, {}, 400, "Timestamp"),  # no zone
        ({"expireTime": "2999-01-01T00:00:00Z"}, KEY, {}, 400, "less than 20 hours"),
        ({"bidiGenerateContentSetup": "TEXT"}, KEY, {}, 400, "expected an object"),
        ({"fieldMask": 7}, KEY, {}, 400, "FieldMask"),
        ({"fieldMask": ",".join(["a"] * 65)}, KEY, {}, 400, "too many"),
        ({}, KEY, {"path": "/v1beta/auth_tokens"}, 404, "not found"),
        ({}, KEY, {"method": "PUT"}, 405, "not allowed"),
        (b"x" * (256 * 1024 + 1), KEY, {}, 413, "too large"),
        ({"bidiGenerateContentSetup": {"voice": "Puck"}}, KEY, {}, 400, 'Unknown name "voice"'),
    ],
)
async def test_minting_refusals_are_googles(
    nursery: trio.Nursery,
    body: dict[str, Any] | bytes,
    key: str | None,
    options: dict[str, Any],
    status: int,
    message: str,
) -> None:
    emulator = await start(nursery, api_keys=[KEY])
    response = await mint_raw(emulator, body, key, **options)
    assert response.status == status
    error = response.json()["error"]
    assert error["code"] == status
    assert message in error["message"]
    assert len(emulator.tokens) == 0
    await wait_until(lambda: emulator.live_count == 0)
    assert emulator.connections == []  # a REST call is not a Live connection


async def test_a_request_head_over_its_bound_is_dropped_unanswered(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY])
    head = f"POST /v1alpha/auth_tokens HTTP/1.1\r\nHost: x\r\nx-goog-api-key: {KEY}\r\n"
    async with await trio.open_tcp_stream("127.0.0.1", emulator.port) as stream:
        await stream.send_all(head.encode() + b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 1))
        with trio.fail_after(5):
            assert await stream.receive_some() == b""
    assert len(emulator.tokens) == 0
    await mint(emulator)  # and the emulator goes on


async def test_a_minted_token_is_no_api_key(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    token = await mint(emulator)
    response = await mint_raw(emulator, {}, token)
    assert (response.status, response.json()["error"]["message"]) == (400, API_KEY_INVALID)
    # Not as ?key= on either path, and not on the plain method even as a token.
    assert await refused(emulator, f"{CONSTRAINED}?key={token}") == (1007, API_KEY_INVALID)
    assert await refused(emulator, f"{PLAIN}?key={token}") == (1007, API_KEY_INVALID)
    on_plain = await refused(emulator, f"{PLAIN}?access_token={token}")
    assert on_plain == (1008, truncate_reason(UNREGISTERED_CALLER))
    unknown = "auth_tokens/" + "0" * 48
    assert await refused(emulator, f"{CONSTRAINED}?access_token={unknown}") == (1007, TOKEN_INVALID)
    # Still unused: the refusals spent nothing.
    assert await text_turn(token, emulator, "now") == 'You said: "now"'


async def test_with_no_keys_configured_any_key_mints(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    assert (await mint_raw(emulator, {}, "anything")).status == 200
    assert (await mint_raw(emulator, {}, None)).status == 403


# Uses ------------------------------------------------------------------------------------------


async def test_uses_are_counted_per_new_session(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    twice = await mint(emulator, uses=2)
    assert await text_turn(twice, emulator, "one") == 'You said: "one"'
    assert await text_turn(twice, emulator, "two") == 'You said: "two"'
    assert await refused(emulator, f"{CONSTRAINED}?access_token={twice}") == (1007, TOKEN_INVALID)
    unlimited = await mint(emulator, uses=0)
    for index in range(4):
        assert await text_turn(unlimited, emulator, str(index)) == f'You said: "{index}"'
    default = await mint(emulator)  # uses 1
    assert await text_turn(default, emulator, "once") == 'You said: "once"'
    assert await refused(emulator, f"{CONSTRAINED}?access_token={default}") == (1007, TOKEN_INVALID)


async def test_a_resumption_does_not_spend_a_use(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    token = await mint(emulator, uses=1)
    path = f"{CONSTRAINED}?access_token={token}"
    async with connect(emulator, path) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig=TEXT, sessionResumption={})
        await send(ws, {"realtimeInput": {"text": "remember"}})
        await until_turn_complete(ws)
        update = await receive(ws)
        handle = update["sessionResumptionUpdate"]["newHandle"]
    for _ in range(2):  # resumed twice with the one-use token
        async with connect(emulator, path, {"Authorization": f"Token {token}"}) as ws:
            await open_session(
                ws, model=TEXT_MODEL, generationConfig=TEXT, sessionResumption={"handle": handle}
            )
            await send(ws, {"realtimeInput": {"text": "again"}})
            assert model_text(await until_turn_complete(ws)) == 'You said: "again"'
            handle = (await receive(ws))["sessionResumptionUpdate"]["newHandle"]
    assert await refused(emulator, path) == (1007, TOKEN_INVALID)  # but no new session
    first, *resumed, _ = emulator.connections
    assert all(r.session_id == first.session_id for r in resumed)


# Time ------------------------------------------------------------------------------------------


async def test_new_sessions_end_at_new_session_expire_time_resumptions_at_expire_time(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    token = await mint(emulator, uses=0)  # newSessionExpireTime: now + 60 s by default
    path = f"{CONSTRAINED}?access_token={token}"
    async with connect(emulator, path) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig=TEXT, sessionResumption={})
        await send(ws, {"realtimeInput": {"text": "hi"}})
        await until_turn_complete(ws)
        handle = (await receive(ws))["sessionResumptionUpdate"]["newHandle"]
    mock_clock.jump(59)
    assert await text_turn(token, emulator, "in time") == 'You said: "in time"'
    mock_clock.jump(2)
    assert await refused(emulator, path) == (1007, TOKEN_INVALID)
    resume = {"sessionResumption": {"handle": handle}}
    async with connect(emulator, path) as ws:  # resuming: until expireTime (30 min)
        await open_session(ws, model=TEXT_MODEL, generationConfig=TEXT, **resume)
    mock_clock.jump(30 * 60)
    assert await refused(emulator, path, **resume) == (1007, TOKEN_INVALID)


async def test_a_session_ends_when_its_token_expires(
    nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast", go_away_lead_seconds=10)
    token = await mint(emulator, expireTime=rfc3339(emulator.wall_time() + 120))
    async with connect(emulator, f"{CONSTRAINED}?access_token={token}") as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig=TEXT)
        mock_clock.jump(100)
        mock_clock.jump(15)  # past goAway (10 s ahead), not yet the end
        go_away = await receive(ws)
        assert "goAway" in go_away
        mock_clock.jump(6)
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1011, DEADLINE_EXPIRED)


# Locks -----------------------------------------------------------------------------------------


async def test_without_a_field_mask_the_tokens_setup_is_the_session(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    token = await mint(
        emulator,
        bidiGenerateContentSetup={
            "generation_config": {"response_modalities": ["TEXT"], "temperature": 0.1},
            "systemInstruction": {"parts": [{"text": "locked"}]},
        },
    )
    said = await text_turn(
        token,
        emulator,
        "hi",
        systemInstruction={"parts": [{"text": "mine"}]},
        tools=[{"functionDeclarations": [{"name": "f"}]}],
    )
    assert said == 'You said: "hi"'
    (record,) = emulator.connections
    assert record.setup == {
        "model": TEXT_MODEL,  # the token sets none: the client's
        "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.1},
        "systemInstruction": {"parts": [{"text": "locked"}]},
    }


async def test_a_field_mask_locks_its_paths_only(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=[KEY], speed="fast")
    token = await mint(
        emulator,
        bidiGenerateContentSetup={
            "model": TEXT_MODEL,
            "generationConfig": {"responseModalities": ["TEXT"]},
        },
        fieldMask="model,generationConfig.responseModalities,generation_config.temperature",
    )
    path = f"{CONSTRAINED}?access_token={token}"
    async with connect(emulator, path) as ws:
        await send(
            ws,
            {
                "setup": {
                    "model": "models/gemini-3.8-live",  # locked: the token's model wins
                    "generationConfig": {
                        "responseModalities": ["AUDIO"],  # locked
                        "temperature": 0.9,  # locked, the token sets none: removed
                        "topP": 0.3,
                    },
                    "systemInstruction": {"parts": [{"text": "mine"}]},
                }
            },
        )
        assert await receive(ws) == {"setupComplete": {}}
        await send(ws, {"realtimeInput": {"text": "hello"}})
        assert model_text(await until_turn_complete(ws)) == 'You said: "hello"'  # TEXT
    (record,) = emulator.connections
    assert record.setup == {
        "model": TEXT_MODEL,
        "generationConfig": {"responseModalities": ["TEXT"], "topP": 0.3},
        "systemInstruction": {"parts": [{"text": "mine"}]},
    }


# The pure rules --------------------------------------------------------------------------------


def test_a_request_with_nothing_gets_googles_defaults() -> None:
    request = read_token_request(b"", 1000.0)
    assert request == TokenRequest(1000.0 + 30 * 60, 1000.0 + 60, 1, None, None)
    snake = read_token_request(b'{"new_session_expire_time": "1970-01-01T00:20:00.5+00:00"}', 0)
    assert snake.new_session_until == 1200.5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:10Z", 10.0),
        ("1970-01-01T01:00:10+01:00", 10.0),
        ("1970-01-01t00:00:10.123456789z", 10.123456),
        ("1970-01-01T00:00:10", None),
        ("1970-13-01T00:00:10Z", None),
        ("x" * 100, None),
        (10, None),
    ],
)
def test_rfc3339(text: object, seconds: float | None) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == (None if seconds is None else pytest.approx(seconds))


def test_times_further_than_twenty_hours_are_refused() -> None:
    read_token_request(orjson.dumps({"expireTime": rfc3339(MAX_AHEAD_SECONDS)}), 0)
    with pytest.raises(BadTokenRequest):
        read_token_request(orjson.dumps({"expireTime": rfc3339(MAX_AHEAD_SECONDS + 1)}), 0)


def test_the_book_is_bounded_and_makes_room_from_expired_tokens() -> None:
    book = TokenBook(limit=2)
    short = TokenRequest(expire_at=10, new_session_until=5, uses=1)
    first, second = book.mint(short, 0), book.mint(short, 0)
    assert isinstance(first, Token)
    assert isinstance(second, Token)
    assert book.mint(short, 9) is None  # full of unexpired tokens
    third = book.mint(short, 10)  # the first two have expired
    assert third is not None
    assert (first.name in book, third.name in book, len(book)) == (False, True, 1)
