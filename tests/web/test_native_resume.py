"""The Gemini-native endpoint's resumption and multi-use tokens, end to end: Google's Python SDK
(google-genai) and raw WebSocket clients through a real proxy in front of the emulator.

A native client that asks for ``sessionResumption`` gets a liveproxy handle
(``sessionResumptionUpdate``), never the emulator's; reconnecting with it and the same token
continues the same Gemini conversation, without spending a use of the token.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import trio
import trio.testing
from google.genai import types
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket

from liveproxy.config import SignInSettings
from liveproxy.emulator import Emulator, Faults
from liveproxy.protocol.closes import SESSION_NOT_FOUND
from liveproxy.serving.server import serve
from liveproxy.store.redis import open_redis_store
from liveproxy.web.app import create_app
from tests.conftest import Proxy, ProxyFactory, proxy_config
from tests.emulator.helpers import silence16, tone16
from tests.genai_sdk import TRANSCRIBED_AUDIO, in_asyncio, send_audio, weather_round_trip
from tests.http import request
from tests.models import TEST_MODEL
from tests.redis_server import RedisServer
from tests.web.test_native import (
    MALFORMED,
    PATH,
    mint,
    said,
    sdk_client,
    turn,
    turns_across_a_switch,
)
from tests.wsclient import BrowserClient, has_key, texts, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")

APP = "https://app.example"
OTHER = "https://other.example"
TEXT_SETUP: dict[str, Any] = {"generationConfig": {"responseModalities": ["TEXT"]}}


def resumable_config(handle: str | None = None) -> types.LiveConnectConfig:
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT],
        session_resumption=types.SessionResumptionConfig(handle=handle),
    )


def emulator_handles(emulator: Emulator) -> list[str]:
    """Every resumption handle the emulator sent the proxy, on any connection."""
    return [
        m["sessionResumptionUpdate"]["newHandle"]
        for record in emulator.connections
        for m in record.sent
        if m.get("sessionResumptionUpdate", {}).get("newHandle")
    ]


async def sockets_done(proxy: Proxy) -> None:
    """Wait until every socket's session is over and its conversation kept."""
    with trio.fail_after(10):
        await proxy.state.gauges.wait_idle()


@asynccontextmanager
async def native(
    proxy: Proxy, token: str, origin: str | None = None
) -> AsyncIterator[WebSocketConnection]:
    headers = [(b"Origin", origin.encode())] if origin else []
    async with open_websocket(
        "127.0.0.1",
        proxy.port,
        f"{PATH}?access_token={token}",
        use_ssl=False,
        extra_headers=headers,
    ) as ws:
        yield ws


def setup_message(resumption: bool, handle: str | None) -> dict[str, Any]:
    setup = dict(TEXT_SETUP)
    if resumption:
        setup["sessionResumption"] = {"handle": handle} if handle else {}
    return {"setup": setup}


async def converse(
    proxy: Proxy,
    token: str,
    text: str,
    *,
    handle: str | None = None,
    resumption: bool = True,
    origin: str | None = None,
) -> tuple[str | None, str]:
    """One native session: its setup (asking for resumption, resuming ``handle``), one turn.
    Returns the handle announced (None when none was asked for) and the model's answer."""
    async with native(proxy, token, origin) as ws:
        client = BrowserClient(ws)
        await client.send_json(setup_message(resumption, handle))
        assert await client.recv_json() == {"setupComplete": {}}
        announced = None
        if resumption:
            update = await client.recv_json()
            assert set(update) == {"sessionResumptionUpdate"}
            assert update["sessionResumptionUpdate"]["resumable"] is True
            announced = update["sessionResumptionUpdate"]["newHandle"]
        await client.send_json({"realtimeInput": {"text": text}})
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    await sockets_done(proxy)
    return announced, "".join(texts(frames))


async def refused(
    proxy: Proxy,
    token: str,
    *,
    handle: str | None = None,
    origin: str | None = None,
    others_open: bool = False,
) -> tuple[int | None, str | None]:
    """A native socket's close, its setup (resuming ``handle``) sent if it got that far (then,
    unless ``others_open``, every socket's session over)."""
    async with native(proxy, token, origin) as ws:
        client = BrowserClient(ws)
        with suppress(ConnectionClosed):  # refused at once, before the setup
            await client.send_json(setup_message(True, handle))
        ended = await client.wait_closed()
    assert ended.frames == []
    if not others_open:
        await sockets_done(proxy)
    return ended.code, ended.reason


def bare(token: dict[str, Any]) -> str:
    name: str = token["name"]
    return name.removeprefix("auth_tokens/")


# Google's SDK ----------------------------------------------------------------------------------


async def test_the_sdk_resumes_its_conversation_with_a_liveproxy_handle(proxy: Proxy) -> None:
    token = await mint(proxy)

    async def first() -> list[types.LiveServerMessage]:
        client = sdk_client(proxy, token["name"])
        async with client.aio.live.connect(model=TEST_MODEL, config=resumable_config()) as s:
            return await turn(s, "one")

    one = await in_asyncio(first)
    [update] = [m.session_resumption_update for m in one if m.session_resumption_update]
    assert update.resumable
    handle = update.new_handle
    assert handle
    await sockets_done(proxy)
    (before,) = proxy.emulator.connections
    issued = emulator_handles(proxy.emulator)
    assert issued  # the emulator gave the proxy handles: the client saw none of them
    assert handle not in issued

    async def second() -> list[types.LiveServerMessage]:
        client = sdk_client(proxy, token["name"])  # the same token, its one use spent
        config = resumable_config(handle)
        async with client.aio.live.connect(model=TEST_MODEL, config=config) as s:
            return await turn(s, "two")

    two = await in_asyncio(second)
    assert said(two) == 'You said: "two"'
    [renewed] = [m.session_resumption_update for m in two if m.session_resumption_update]
    assert renewed.new_handle not in (handle, *emulator_handles(proxy.emulator))
    after = proxy.emulator.connections[-1]
    assert after.session_id == before.session_id  # the same Gemini conversation
    assert after.resumed_handle == issued[-1]  # with the latest handle Gemini gave
    # The model answers with the whole conversation as its context: it remembers "one".
    prompt = [m.usage_metadata.prompt_token_count for m in one + two if m.usage_metadata]
    assert prompt[-1] is not None
    assert prompt[0] is not None
    assert prompt[-1] > prompt[0]
    assert after.setup is not None
    assert "handle" in after.setup["sessionResumption"]


async def test_a_go_away_is_absorbed_and_only_the_liveproxy_handle_is_seen(proxy: Proxy) -> None:
    token = await mint(proxy)
    proxy.emulator.queue_faults(Faults(go_away_after=1))

    one, two = await turns_across_a_switch(proxy, token["name"], resumable_config())
    assert said(one) == 'You said: "one"'
    assert said(two) == 'You said: "two"'
    assert all(m.go_away is None for m in one + two)
    updates = [m.session_resumption_update for m in one + two if m.session_resumption_update]
    assert len(updates) == 1  # once, for this socket: the switch is not the client's business
    assert updates[0].new_handle not in emulator_handles(proxy.emulator)
    first, second = proxy.emulator.connections
    assert second.resumed_handle is not None
    assert second.session_id == first.session_id


async def test_audio_goes_both_ways_through_the_sdk(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    proxy = await make_proxy(usage_log=log)
    token = await mint(proxy)
    speech = tone16(0.8)

    async def scenario() -> list[types.LiveServerMessage]:
        client = sdk_client(proxy, token["name"])
        async with client.aio.live.connect(model=TEST_MODEL, config=TRANSCRIBED_AUDIO) as s:
            await send_audio(s, speech + silence16(0.2))
            return [m async for m in s.receive()]

    answer = await in_asyncio(scenario)
    contents = [m.server_content for m in answer if m.server_content is not None]
    heard = "".join(c.input_transcription.text or "" for c in contents if c.input_transcription)
    audio = b"".join(m.data or b"" for m in answer)
    assert heard == "[speech 0.80 s]"
    assert len(audio) == len(speech) * 3 // 2  # the reply as long as the speech, at 24 kHz
    (record,) = proxy.emulator.connections
    assert sum(1 for kind, _ in record.received if kind == "realtimeInput") >= len(
        pcm_chunks(speech)
    )
    # Metered as on /ws, from the inline audio's length: seconds sent and received.
    await wait_until(lambda: log.exists() and log.read_text().count("\n") == 1)
    usage = orjson.loads(log.read_text())["usage"]
    assert usage["audio_in_seconds"] == round((len(speech) + len(silence16(0.2))) / 32000, 3)
    assert usage["audio_out_seconds"] == round(len(audio) / 48000, 3)


def pcm_chunks(speech: bytes) -> list[int]:
    return list(range(0, len(speech) + 2 * 3200, 3200))


async def test_a_client_tool_call_round_trip_through_the_sdk(proxy: Proxy) -> None:
    token = await mint(proxy)

    async def scenario() -> tuple[list[types.FunctionCall], str]:
        declaration = types.FunctionDeclaration(name="get_weather", description="weather")
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.TEXT],
            tools=[types.Tool(function_declarations=[declaration])],
        )
        client = sdk_client(proxy, token["name"])
        async with client.aio.live.connect(model=TEST_MODEL, config=config) as s:
            return await weather_round_trip(s)

    calls, text = await in_asyncio(scenario)
    (call,) = calls
    assert (call.name, call.args) == ("get_weather", {"location": "Tokyo"})
    assert text == 'get_weather returned {"tempC":21}'
    (record,) = proxy.emulator.connections
    [(_, response)] = [m for m in record.received if m[0] == "toolResponse"]
    assert response["functionResponses"][0]["id"] == call.id


# Uses ------------------------------------------------------------------------------------------


async def test_a_token_of_two_uses_starts_two_sessions_then_is_refused(proxy: Proxy) -> None:
    token = bare(await mint(proxy, uses=2))
    for text in ("one", "two"):
        _, answer = await converse(proxy, token, text, resumption=False)
        assert answer == f'You said: "{text}"'
    assert await refused(proxy, token) == (1007, MALFORMED)
    assert len(proxy.emulator.connections) == 2  # the third was never dialled


async def test_an_unlimited_token_starts_sessions_until_its_ttl(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(token_ttl_seconds=5)
    token = bare(await mint(proxy, uses=0))
    for n in range(4):
        _, answer = await converse(proxy, token, f"n{n}", resumption=False)
        assert answer == f'You said: "n{n}"'
    await trio.sleep(5)  # real time: the store runs on trio's clock, the sockets are real
    assert await refused(proxy, token) == (1007, MALFORMED)


async def test_sessions_of_a_multi_use_token_respect_the_clients_limit(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(max_sessions_per_client=2)
    token = bare(await mint(proxy, uses=0))
    async with native(proxy, token) as ws:  # the token holds one place, this session another
        client = BrowserClient(ws)
        await client.send_json(setup_message(False, None))
        assert await client.recv_json() == {"setupComplete": {}}
        code, reason = await refused(proxy, token, others_open=True)
        assert code == 1011
        assert reason is not None
        assert "2 sessions or tokens" in reason
    await sockets_done(proxy)
    _, answer = await converse(proxy, token, "now", resumption=False)  # its place is back
    assert answer == 'You said: "now"'


# Resuming with a handle ------------------------------------------------------------------------


async def test_a_spent_token_resumes_with_its_handle_and_only_with_it(proxy: Proxy) -> None:
    token = bare(await mint(proxy))
    handle, answer = await converse(proxy, token, "one")
    assert handle is not None
    assert answer == 'You said: "one"'
    assert await refused(proxy, token) == (1007, MALFORMED)  # its one use is spent
    assert await refused(proxy, token, handle="x" * 43) == (1008, SESSION_NOT_FOUND)
    assert await refused(proxy, token, handle="y" * 300) == (1008, SESSION_NOT_FOUND)
    renewed, answer = await converse(proxy, token, "two", handle=handle)
    assert answer == 'You said: "two"'
    assert renewed is not None
    assert renewed != handle
    first, *_, last = proxy.emulator.connections
    assert last.session_id == first.session_id
    assert await refused(proxy, token, handle=handle) == (1008, SESSION_NOT_FOUND)  # used
    _, answer = await converse(proxy, token, "three", handle=renewed)  # the new one works
    assert answer == 'You said: "three"'


@asynccontextmanager
async def host_on(redis_server: RedisServer, emulator: Emulator) -> AsyncIterator[Proxy]:
    """A proxy (a "host") with its own client of the shared Redis store."""
    config = proxy_config(emulator, workers=1)
    async with (
        open_redis_store(redis_server.url, time.time, config.session_lease_seconds) as store,
        trio.open_nursery() as nursery,
    ):
        app = create_app(config, store=store)
        stop = trio.Event()
        binds = await nursery.start(partial(serve, config, stop=stop, app=app))
        proxy = Proxy(int(binds[0].rsplit(":", 1)[1]), app, emulator, stop)
        try:
            yield proxy
        finally:
            await sockets_done(proxy)
            stop.set()


async def test_a_conversation_resumes_on_another_host_sharing_the_store(
    emulator: Emulator, redis_server: RedisServer
) -> None:
    async with host_on(redis_server, emulator) as host_a, host_on(redis_server, emulator) as host_b:
        token = bare(await mint(host_a, uses=1))
        handle, _ = await converse(host_a, token, "one")
        _, answer = await converse(host_b, token, "two", handle=handle)
        assert answer == 'You said: "two"'
        assert await refused(host_b, token) == (1007, MALFORMED)  # its one use spent on A
    first, second = emulator.connections  # one emulator behind both
    assert second.session_id == first.session_id


async def test_a_handle_is_refused_to_another_origins_token(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(allowed_origins=frozenset({APP, OTHER}))
    token = bare(await mint(proxy, origin=APP))
    handle, _ = await converse(proxy, token, "one", origin=APP)
    assert handle is not None
    other = bare(await mint(proxy, origin=OTHER))
    assert await refused(proxy, other, handle=handle, origin=OTHER) == (1008, SESSION_NOT_FOUND)
    assert await refused(proxy, token, handle=handle, origin=OTHER) == (1007, MALFORMED)
    _, answer = await converse(proxy, token, "two", handle=handle, origin=APP)  # still kept
    assert answer == 'You said: "two"'


SECRET = "s" * 40


async def signed_in_mint(proxy: Proxy, sub: str) -> str:
    bearer = jwt.encode({"sub": sub, "aud": "app", "exp": 4102444800}, SECRET, "HS256")
    body = b'{"ephemeral": {}}'
    headers = {"Authorization": f"Bearer {bearer}"}
    response = await request("127.0.0.1", proxy.port, "POST", "/api/auth", body, headers)
    assert response.status == 200, response.body
    return bare(response.json())


async def test_a_handle_is_refused_to_another_signed_in_user(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(signin=SignInSettings(jwt_secret=SECRET, audience="app"))
    token = await signed_in_mint(proxy, "user-1")
    handle, _ = await converse(proxy, token, "one")
    assert handle is not None
    stranger = await signed_in_mint(proxy, "user-2")
    assert await refused(proxy, stranger, handle=handle) == (1008, SESSION_NOT_FOUND)
    again = await signed_in_mint(proxy, "user-1")  # the same user, with a new token
    _, answer = await converse(proxy, again, "two", handle=handle)
    assert answer == 'You said: "two"'


async def test_a_handle_past_the_resume_window_is_refused(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(resume_window_seconds=20, token_ttl_seconds=600)
    token = bare(await mint(proxy, uses=0))
    handle, _ = await converse(proxy, token, "one")
    await trio.sleep(21)
    assert await refused(proxy, token, handle=handle) == (1008, SESSION_NOT_FOUND)


async def test_a_resume_after_the_tokens_expire_time_is_refused(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(resume_window_seconds=3600, token_ttl_seconds=30)
    token = bare(await mint(proxy, expire_seconds=60))  # expireTime: 30 s + 60 s from now
    handle, _ = await converse(proxy, token, "one")
    await trio.sleep(45)  # past newSessionExpireTime: a resume is still fine
    handle, answer = await converse(proxy, token, "two", handle=handle)
    assert answer == 'You said: "two"'
    await trio.sleep(50)  # past expireTime
    assert await refused(proxy, token, handle=handle) == (1007, MALFORMED)
