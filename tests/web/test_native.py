"""The Gemini-native endpoint end to end: tokens minted by ``POST /api/auth {"ephemeral"}``,
spent by Google's own Python SDK (google-genai) and by a raw WebSocket client on Google's paths,
through a real proxy in front of the emulator.

The SDK runs on asyncio, so each SDK scenario runs in a worker thread (``asyncio.run``) while
the proxy and the emulator serve from the trio test (as ``tests/emulator/test_sdk.py`` does).
The SDK insists on ``wss://``; it is pointed at the proxy's plain ``ws://`` through its
private ``_websocket_base_url`` (``gemini-live.md`` section 7.3, Option B).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from trio_websocket import open_websocket
from websockets.exceptions import ConnectionClosedError

from liveproxy.emulator import Faults
from liveproxy.protocol.closes import UNREGISTERED_CALLER, truncate_reason
from tests.conftest import Proxy, ProxyFactory
from tests.genai_sdk import in_asyncio
from tests.http import request
from tests.models import TEST_MODEL
from tests.wsclient import BrowserClient, has_key, texts

TEXT = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
PATH = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
MALFORMED = "Missing or malformed auth token"

pytestmark = pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")


async def mint(proxy: Proxy, origin: str | None = None, **ephemeral: Any) -> dict[str, Any]:
    body = json.dumps({"ephemeral": ephemeral}).encode()
    headers = {"Origin": origin} if origin else None
    response = await request("127.0.0.1", proxy.port, "POST", "/api/auth", body, headers)
    assert response.status == 200, response.body
    answer: dict[str, Any] = response.json()
    return answer


def sdk_client(proxy: Proxy, token_name: str) -> genai.Client:
    client = genai.Client(
        api_key=token_name,
        http_options={"api_version": "v1alpha", "base_url": f"http://127.0.0.1:{proxy.port}"},
    )
    api: Any = client._api_client
    api._websocket_base_url = lambda *a, **k: f"ws://127.0.0.1:{proxy.port}"
    api._websocket_ssl_ctx = {}
    return client


async def turn(session: Any, text: str) -> list[types.LiveServerMessage]:
    await session.send_client_content(turns={"role": "user", "parts": [{"text": text}]})
    return [message async for message in session.receive()]


def said(messages: list[types.LiveServerMessage]) -> str:
    return "".join(m.text or "" for m in messages)


# Minting ---------------------------------------------------------------------------------------


async def test_minting_answers_like_auth_tokens_create(proxy: Proxy) -> None:
    answer = await mint(proxy, expire_seconds=120)
    assert set(answer) == {"name", "expireTime", "newSessionExpireTime", "session_time_limit"}
    assert answer["name"].startswith("auth_tokens/")
    assert answer["session_time_limit"] == 120
    assert answer["newSessionExpireTime"] < answer["expireTime"]
    assert answer["expireTime"].endswith("Z")


@pytest.mark.parametrize(
    ("ephemeral", "message"),
    [
        ({"uses": -1}, "from 0 (unlimited) to 1000"),
        ({"uses": 1001}, "from 0 (unlimited) to 1000"),
        ({"uses": True}, "from 0 (unlimited) to 1000"),
        ({"uses": "2"}, "from 0 (unlimited) to 1000"),
        ({"model": "gemini-nobody-serves"}, "is not one this server serves"),
        ({"config": {"responseModalities": ["TEXT"]}}, "responseModalities"),
        ({"config": {"systemInstruction": "x" * 17000}}, "at most 16384 bytes"),
        ({"config": "TEXT"}, "must be a JSON object"),
        ({"lock_additional_fields": "temperature"}, "lock_additional_fields"),
        ({"expire_seconds": "60"}, "expire_seconds"),
        ({"voice": "Puck"}, "unknown field"),
    ],
)
async def test_minting_refuses_what_is_out_of_bounds(
    proxy: Proxy, ephemeral: dict[str, Any], message: str
) -> None:
    body = json.dumps({"ephemeral": ephemeral}).encode()
    response = await proxy.http("POST", "/api/auth", body)
    assert response.status == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert message in response.json()["error"]["message"]


# Google's SDK ----------------------------------------------------------------------------------


async def test_the_sdk_holds_a_conversation_with_an_ephemeral_token(proxy: Proxy) -> None:
    token = await mint(proxy)

    async def scenario() -> tuple[list[types.LiveServerMessage], ...]:
        client = sdk_client(proxy, token["name"])
        async with client.aio.live.connect(model=TEST_MODEL, config=TEXT) as session:
            return await turn(session, "hello"), await turn(session, "again")

    first, second = await in_asyncio(scenario)
    assert said(first) == 'You said: "hello"'
    assert said(second) == 'You said: "again"'
    assert first[-1].server_content is not None
    assert first[-1].server_content.turn_complete
    (record,) = proxy.emulator.connections
    assert record.model == f"models/{TEST_MODEL}"
    assert [kind for kind, _ in record.received] == ["clientContent", "clientContent"]


async def test_a_token_starts_one_session_only(proxy: Proxy) -> None:
    token = await mint(proxy)

    async def scenario() -> tuple[int | None, str]:
        client = sdk_client(proxy, token["name"])
        async with client.aio.live.connect(model=TEST_MODEL, config=TEXT) as session:
            assert said(await turn(session, "once")) == 'You said: "once"'
        # The close comes right after the upgrade, as Google's: the SDK raises it as an
        # APIError, or (when it lands before the SDK has sent its setup) as websockets' own.
        with pytest.raises((errors.APIError, ConnectionClosedError)) as refused:
            async with client.aio.live.connect(model=TEST_MODEL, config=TEXT):
                pass
        error = refused.value
        if isinstance(error, errors.APIError):
            return error.code, str(error)
        assert isinstance(error, ConnectionClosedError)
        assert error.rcvd is not None
        return error.rcvd.code, error.rcvd.reason

    code, reason = await in_asyncio(scenario)
    assert code == 1007
    assert MALFORMED in reason
    assert len(proxy.emulator.connections) == 1  # the second was never dialled


async def test_a_go_away_is_absorbed_and_the_conversation_goes_on(proxy: Proxy) -> None:
    token = await mint(proxy)
    proxy.emulator.queue_faults(Faults(go_away_after=1))

    one, two = await turns_across_a_switch(proxy, token["name"], TEXT)
    assert said(one) == 'You said: "one"'
    assert said(two) == 'You said: "two"'
    assert all(m.go_away is None and m.session_resumption_update is None for m in one + two)
    first, second = proxy.emulator.connections
    assert second.resumed_handle is not None  # the same conversation, on a new connection
    assert first.received[0][0] == "clientContent"
    assert second.received[-1][1]["turns"][0]["parts"][0]["text"] == "two"


async def trio_wait_for_switch(proxy: Proxy) -> None:
    """(From the SDK's asyncio thread) wait until the proxy has moved to a second connection."""
    for _ in range(200):
        if len(proxy.emulator.connections) >= 2 and proxy.emulator.connections[0].close_code:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy did not switch connections")


async def turns_across_a_switch(
    proxy: Proxy, token_name: str, config: types.LiveConnectConfig
) -> list[list[types.LiveServerMessage]]:
    """Turns "one" and "two" over the SDK, the second once the proxy has moved to a second
    Gemini connection (queue the fault that moves it first)."""

    async def scenario() -> list[list[types.LiveServerMessage]]:
        client = sdk_client(proxy, token_name)
        async with client.aio.live.connect(model=TEST_MODEL, config=config) as session:
            turns = [await turn(session, "one")]
            await trio_wait_for_switch(proxy)
            turns.append(await turn(session, "two"))
            return turns

    return list(await in_asyncio(scenario))


async def test_the_tokens_model_wins_over_the_clients(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(model="gemini-3.8-live", allowed_models=frozenset({TEST_MODEL}))
    token = await mint(proxy, model=TEST_MODEL)

    async def scenario() -> list[types.LiveServerMessage]:
        client = sdk_client(proxy, token["name"])
        # gemini-3.8-live speaks only audio: the text turn works because the token's model wins
        async with client.aio.live.connect(model="gemini-3.8-live", config=TEXT) as session:
            return await turn(session, "which model")

    assert said(await in_asyncio(scenario)) == 'You said: "which model"'
    (record,) = proxy.emulator.connections
    assert record.model == f"models/{TEST_MODEL}"


async def test_the_tokens_locked_config_wins_over_the_clients(proxy: Proxy) -> None:
    locked = {"generationConfig": {"temperature": 0.2}, "systemInstruction": "Be brief."}
    token = await mint(proxy, config=locked, lock_additional_fields=[])

    async def scenario() -> list[types.LiveServerMessage]:
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.TEXT],
            temperature=0.9,
            system_instruction="Be verbose.",
        )
        async with sdk_client(proxy, token["name"]).aio.live.connect(
            model=TEST_MODEL, config=config
        ) as session:
            return await turn(session, "hi")

    assert said(await in_asyncio(scenario)) == 'You said: "hi"'
    (record,) = proxy.emulator.connections
    assert record.setup is not None
    assert record.setup["generationConfig"]["temperature"] == 0.2
    assert record.setup["generationConfig"]["responseModalities"] == ["TEXT"]  # the client's
    assert record.setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


# Raw clients: every way a token comes, and the refusals ------------------------------------------


@pytest.mark.parametrize(
    ("resource", "headers"),
    [
        (PATH + "?access_token=auth_tokens/{t}", []),
        (PATH + "?key={t}", []),
        (PATH, [(b"authorization", b"Token auth_tokens/{t}")]),
        (PATH, [(b"x-goog-api-key", b"auth_tokens/{t}")]),
        (
            "//ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
            "?access_token={t}",
            [],
        ),
    ],
)
async def test_each_token_transport_opens_a_native_session(
    proxy: Proxy, resource: str, headers: list[tuple[bytes, bytes]]
) -> None:
    token = (await mint(proxy))["name"].removeprefix("auth_tokens/")
    sent = [(name, value.replace(b"{t}", token.encode())) for name, value in headers]
    async with open_websocket(
        "127.0.0.1", proxy.port, resource.replace("{t}", token), use_ssl=False, extra_headers=sent
    ) as ws:
        setup = {"setup": {"model": f"models/{TEST_MODEL}", "generation_config": {}}}
        setup["setup"]["generation_config"] = {"response_modalities": ["TEXT"]}
        await ws.send_message(json.dumps(setup))
        assert json.loads(await ws.get_message()) == {"setupComplete": {}}
        await ws.send_message(json.dumps({"realtimeInput": {"text": "raw"}}))
        answers: list[dict[str, Any]] = []
        while not answers or not answers[-1].get("serverContent", {}).get("turnComplete"):
            answers.append(json.loads(await ws.get_message()))
    # Gemini's messages as Gemini sent them: nothing of the browser protocol added.
    assert all(len(set(m) - {"serverContent", "usageMetadata"}) == 0 for m in answers)
    text = "".join(
        part.get("text", "")
        for m in answers
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )
    assert text == 'You said: "raw"'


async def native_refusal(
    proxy: Proxy, resource: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int | None, str | None]:
    async with open_websocket(
        "127.0.0.1", proxy.port, resource, use_ssl=False, extra_headers=headers or []
    ) as ws:
        ended = await BrowserClient(ws).wait_closed()
    assert ended.frames == []
    return ended.code, ended.reason


async def test_no_token_is_refused_as_google_refuses_an_unregistered_caller(proxy: Proxy) -> None:
    assert await native_refusal(proxy, PATH) == (1008, truncate_reason(UNREGISTERED_CALLER))
    assert proxy.emulator.connections == []


@pytest.mark.parametrize("token", ["not-a-token", "auth_tokens/" + "A" * 43])
async def test_an_unknown_token_is_refused_without_dialling_upstream(
    proxy: Proxy, token: str
) -> None:
    assert await native_refusal(proxy, f"{PATH}?access_token={token}") == (1007, MALFORMED)
    assert proxy.emulator.connections == []


async def test_a_session_token_does_not_open_the_native_endpoint_nor_an_ephemeral_one_ws(
    proxy: Proxy,
) -> None:
    session_token = await proxy.token()
    assert await native_refusal(proxy, f"{PATH}?access_token={session_token}") == (
        1007,
        MALFORMED,
    )
    ephemeral = (await mint(proxy))["name"].removeprefix("auth_tokens/")
    async with proxy.connect(ephemeral) as client:
        ended = await client.wait_closed()
    assert ended.code == 4003
    assert proxy.emulator.connections == []


async def test_a_token_works_only_from_the_origin_that_minted_it(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(allowed_origins=frozenset({"https://app.example"}))
    token = (await mint(proxy, origin="https://app.example"))["name"]
    assert await native_refusal(proxy, f"{PATH}?access_token={token}") == (1007, MALFORMED)
    assert proxy.emulator.connections == []


async def test_a_message_gemini_would_refuse_closes_with_1007(proxy: Proxy) -> None:
    token = (await mint(proxy))["name"]
    async with open_websocket(
        "127.0.0.1", proxy.port, f"{PATH}?access_token={token}", use_ssl=False
    ) as ws:
        await ws.send_message(json.dumps({"setup": {"generationConfig": {}}}))
        assert json.loads(await ws.get_message()) == {"setupComplete": {}}
        await ws.send_message(json.dumps({"type": "text", "text": "browser protocol"}))
        ended = await BrowserClient(ws).wait_closed()
    assert ended.code == 1007
    assert ended.frames == []  # no error event: Gemini sends none


# Server tools -------------------------------------------------------------------------------------

TOOLS_MODULE = """
from liveproxy.tools import tool

@tool("How many items are in stock.")
async def stock(sku: str) -> int:
    return len(sku)
"""


async def test_server_tools_run_and_only_the_clients_calls_reach_it(
    make_proxy: ProxyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"native_tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TOOLS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    proxy = await make_proxy(tools_modules=(name,))
    token = (await mint(proxy))["name"]
    weather = {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    setup = {"setup": {"generationConfig": {"responseModalities": ["TEXT"]}, "tools": [weather]}}
    async with open_websocket(
        "127.0.0.1", proxy.port, f"{PATH}?access_token={token}", use_ssl=False
    ) as ws:
        client = BrowserClient(ws)
        await client.send_json(setup)
        assert await client.recv_json() == {"setupComplete": {}}
        await client.send_json({"realtimeInput": {"text": 'call stock {"sku": "abc"}'}})
        served = await client.recv_until(has_key("serverContent", "turnComplete"))
        await client.send_json({"realtimeInput": {"text": 'call get_weather {"city": "X"}'}})
        [call] = [m for m in map(json.loads, await client.recv_until(has_key("toolCall")))]
        [function_call] = call["toolCall"]["functionCalls"]
        response = {"id": function_call["id"], "name": "get_weather", "response": {"t": 21}}
        await client.send_json({"toolResponse": {"functionResponses": [response]}})
        answered = await client.recv_until(has_key("serverContent", "turnComplete"))
    assert 'stock returned {"result":3}' in "".join(texts(served))
    assert not any("serverToolCall" in f or "serverToolResult" in f for f in served)
    assert set(call) == {"toolCall"}  # as Gemini sent it: no sessionStats
    assert 'get_weather returned {"t":21}' in "".join(texts(answered))
