"""Broker mode (``EPHEMERAL_UPSTREAM=google``): ``POST /api/auth {"ephemeral"}`` on a real
proxy mints a token at "Google" (the emulator, as the proxy's upstream), and a browser-like
client takes it straight to the emulator's ``BidiGenerateContentConstrained``: the proxy carries
no media. Google down or refusing, and Vertex at start, are refused clearly.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from google import genai
from google.genai import types
from trio_websocket import open_websocket_url

from liveproxy.config import Config, ConfigError
from liveproxy.contract.payloads import EphemeralRequest
from liveproxy.emulator import Emulator, EmulatorConfig
from liveproxy.emulator import serve as serve_emulator
from liveproxy.emulator.tokens import parse_rfc3339
from liveproxy.upstream.connection import GeminiUpstream
from liveproxy.web.broker import MINT_TIMEOUT_SECONDS, google_request, google_setup, rest_base
from tests.conftest import Proxy, ProxyFactory
from tests.emulator.helpers import close_reason, connect, model_text, open_session, send
from tests.emulator.helpers import until_turn_complete as turn_of
from tests.genai_sdk import in_asyncio
from tests.http import HttpResponse, request
from tests.models import TEST_MODEL
from tests.served import serve_refused

KEY = "test-key"
CONSTRAINED = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
MODEL_PATH = f"models/{TEST_MODEL}"
TEXT = {"responseModalities": ["TEXT"]}

pytestmark = pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")


async def google(nursery: trio.Nursery, *keys: str) -> Emulator:
    """The emulator standing in for Google, accepting ``keys`` (default: the proxy's)."""
    config = EmulatorConfig(speed="fast", api_keys=keys or (KEY,))
    emulator: Emulator = await nursery.start(serve_emulator, config)
    return emulator


async def broker(make_proxy: ProxyFactory, emulator: Emulator, **settings: Any) -> Proxy:
    return await make_proxy(emulator_=emulator, ephemeral_upstream="google", **settings)


async def ask(proxy: Proxy, body: dict[str, Any], **headers: str) -> HttpResponse:
    raw = json.dumps(body).encode()
    return await request("127.0.0.1", proxy.port, "POST", "/api/auth", raw, headers or None)


async def mint(proxy: Proxy, **ephemeral: Any) -> dict[str, Any]:
    response = await ask(proxy, {"ephemeral": ephemeral})
    assert response.status == 200, response.body
    answer: dict[str, Any] = response.json()
    return answer


async def converse(emulator: Emulator, token: str, text: str, **setup: Any) -> str:
    """A browser-like client on Google's constrained path with ``token``: one text turn."""
    async with connect(emulator, f"{CONSTRAINED}?access_token={token}") as ws:
        await open_session(ws, **{"model": MODEL_PATH, "generationConfig": TEXT, **setup})
        await send(ws, {"realtimeInput": {"text": text}})
        return model_text(await turn_of(ws))


# Minting at Google, conversing at Google -------------------------------------------------------


async def test_the_token_is_googles_and_the_browser_talks_to_google(
    nursery: trio.Nursery, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator)
    before = datetime.now(UTC)
    answer = await mint(proxy, config={"generationConfig": TEXT}, expire_seconds=120)
    assert set(answer) == {"name", "expireTime", "newSessionExpireTime", "session_time_limit"}
    assert answer["session_time_limit"] == 120
    token = emulator.tokens.get(answer["name"])
    assert token is not None  # minted by "Google", with the answer's times
    assert token.request.expire_at == parse_rfc3339(answer["expireTime"])
    assert token.request.new_session_until == parse_rfc3339(answer["newSessionExpireTime"])
    new_session_until = before + timedelta(seconds=proxy.state.config.token_ttl_seconds)
    assert abs(token.request.new_session_until - new_session_until.timestamp()) <= 2
    assert token.request.expire_at - token.request.new_session_until == 120
    assert (token.request.uses, token.request.field_mask) == (1, None)
    assert token.request.setup == {"model": MODEL_PATH, "generationConfig": TEXT}
    assert "Google minted an ephemeral token" in caplog.text
    assert "/v1alpha/auth_tokens" in caplog.text  # httpx's request line
    assert KEY not in caplog.text
    assert await converse(emulator, answer["name"], "hello") == 'You said: "hello"'
    (record,) = emulator.connections  # the browser's own; the proxy opened none
    assert record.token == answer["name"]
    assert proxy.state.gauges.upstream_connections == 0
    # One use, as asked: Google refuses the second session.
    async with connect(emulator, f"{CONSTRAINED}?access_token={answer['name']}") as ws:
        await send(ws, {"setup": {"model": MODEL_PATH}})
        assert (await close_reason(ws)).code == 1007


async def test_the_locks_hold_at_google(nursery: trio.Nursery, make_proxy: ProxyFactory) -> None:
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator)
    answer = await mint(
        proxy,
        config={"generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.1}},
        lock_additional_fields=["top_k"],
    )
    said = await converse(
        emulator,
        answer["name"],
        "locked",
        model="models/gemini-3.8-live",  # another model: the server's stays
        generationConfig={
            "responseModalities": ["AUDIO"],  # locked: TEXT stays
            "temperature": 0.9,  # locked: 0.1 stays
            "topK": 3,  # locked, set by no one: removed
            "topP": 0.5,  # free
        },
        systemInstruction={"parts": [{"text": "free"}]},
    )
    assert said == 'You said: "locked"'
    (record,) = emulator.connections
    assert record.setup == {
        "model": MODEL_PATH,
        "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.1, "topP": 0.5},
        "systemInstruction": {"parts": [{"text": "free"}]},
    }


async def test_without_a_config_only_the_model_is_locked(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator)
    answer = await mint(proxy)
    token = emulator.tokens.get(answer["name"])
    assert token is not None
    assert (token.request.setup, token.request.field_mask) == ({"model": MODEL_PATH}, ("model",))
    said = await converse(
        emulator,
        answer["name"],
        "mine",
        model="models/gemini-3.8-live",
        systemInstruction={"parts": [{"text": "my own"}]},
    )
    assert said == 'You said: "mine"'
    (record,) = emulator.connections
    assert record.setup == {
        "model": MODEL_PATH,
        "generationConfig": TEXT,
        "systemInstruction": {"parts": [{"text": "my own"}]},
    }


async def test_googles_sdk_converses_with_the_brokered_token(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator)
    answer = await mint(proxy, config={"generation_config": {"response_modalities": ["TEXT"]}})

    async def scenario() -> str:
        client = genai.Client(
            api_key=answer["name"],
            http_options={
                "api_version": "v1alpha",
                "base_url": f"http://127.0.0.1:{emulator.port}",
            },
        )
        api: Any = client._api_client  # the SDK insists on wss://: the emulator here is ws://
        api._websocket_base_url = lambda *a, **k: f"ws://127.0.0.1:{emulator.port}"
        api._websocket_ssl_ctx = {}
        config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])  # locked
        async with client.aio.live.connect(model=TEST_MODEL, config=config) as session:
            await session.send_client_content(turns={"role": "user", "parts": [{"text": "sdk"}]})
            return "".join([m.text or "" async for m in session.receive()])

    said = await in_asyncio(scenario)
    assert said == 'You said: "sdk"'  # TEXT, as the token locked it
    (record,) = emulator.connections
    assert (record.credential, record.credential_kind) == (answer["name"], "token")


async def test_with_no_credentials_the_built_in_emulator_mints(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(api_key=None, upstream_url=None, ephemeral_upstream="google")
    assert proxy.state.config.mode == "emulator"
    answer = await mint(proxy, config={"generationConfig": TEXT})
    upstream = proxy.state.services.upstream
    assert isinstance(upstream, GeminiUpstream)
    where = urlsplit(upstream.target.url).netloc
    url = f"ws://{where}{CONSTRAINED}?access_token={answer['name']}"
    async with open_websocket_url(url) as ws:
        await open_session(ws, model=MODEL_PATH)
        await send(ws, {"realtimeInput": {"text": "built in"}})
        assert model_text(await turn_of(ws)) == 'You said: "built in"'


async def test_session_tokens_are_still_liveproxys(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator)
    response = await ask(proxy, {})
    assert response.status == 200
    assert "session_token" in response.json()
    assert len(emulator.tokens) == 0


async def test_every_rule_comes_before_google(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    emulator = await google(nursery)
    proxy = await broker(make_proxy, emulator, auth_rate_limit=(2, 60.0))
    forbidden = await ask(proxy, {"ephemeral": {}}, Origin="https://evil.example")
    assert (forbidden.status, forbidden.json()["error"]["code"]) == (403, "forbidden_origin")
    bad = await ask(proxy, {"ephemeral": {"model": "gemini-nobody-serves"}})
    assert (bad.status, bad.json()["error"]["code"]) == (400, "bad_request")
    await mint(proxy)  # the second sign-in of the minute (the bad request was the first)
    limited = await ask(proxy, {"ephemeral": {}})
    assert (limited.status, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert len(emulator.tokens) == 1


# Google down or refusing -----------------------------------------------------------------------


async def test_google_unreachable_is_503(make_proxy: ProxyFactory) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    proxy = await make_proxy(upstream_url=f"ws://127.0.0.1:{port}", ephemeral_upstream="google")
    response = await ask(proxy, {"ephemeral": {}})
    assert response.status == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert "could not be reached (ConnectError)" in error["message"]


async def test_google_refusing_is_502_with_its_reason_and_no_key(
    nursery: trio.Nursery, make_proxy: ProxyFactory
) -> None:
    emulator = await google(nursery, "another-key")
    proxy = await broker(make_proxy, emulator)
    response = await ask(proxy, {"ephemeral": {}})
    assert response.status == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_refused"
    assert error["message"] == (
        "Google refused the token: 400 INVALID_ARGUMENT: API key not valid. Please pass a valid "
        "API key."
    )
    assert KEY.encode() not in response.body


async def test_google_too_slow_is_503(
    nursery: trio.Nursery, make_proxy: ProxyFactory, mock_clock: trio.testing.MockClock
) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    accepted: list[trio.SocketStream] = []
    arrived = trio.Event()

    async def never_answer() -> None:
        accepted.append(await listener.accept())
        arrived.set()
        await trio.sleep_forever()

    nursery.start_soon(never_answer)
    port = listener.socket.getsockname()[1]
    proxy = await make_proxy(upstream_url=f"ws://127.0.0.1:{port}", ephemeral_upstream="google")
    answers: list[HttpResponse] = []
    answered = trio.Event()

    async def asking() -> None:
        answers.append(await ask(proxy, {"ephemeral": {}}))
        answered.set()

    nursery.start_soon(asking)
    await arrived.wait()
    mock_clock.jump(MINT_TIMEOUT_SECONDS - 0.5)
    await trio.testing.wait_all_tasks_blocked()
    assert not answered.is_set()
    mock_clock.jump(0.5)
    await answered.wait()
    (answer,) = answers
    assert answer.status == 503
    assert answer.json()["error"]["message"] == "Google's token service did not answer within 10 s"
    for stream in accepted:
        await stream.aclose()
    await listener.aclose()


# Start-up --------------------------------------------------------------------------------------


def test_vertex_credentials_stop_serve_with_one_line_and_exit_2(tmp_path: Path) -> None:
    done = serve_refused(
        {"PROJECT_ID": "my-project", "EPHEMERAL_UPSTREAM": "google"},
        cwd=tmp_path,
        unset=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    )
    assert done.returncode == 2
    assert done.stderr == (
        "liveproxy: configuration error: EPHEMERAL_UPSTREAM=google needs a Gemini Developer API "
        "key (GOOGLE_API_KEY): Vertex AI has no ephemeral tokens\n"
    )


def test_the_setting() -> None:
    assert Config.from_env({}, env_file=None).ephemeral_upstream == "liveproxy"
    google_key = {"EPHEMERAL_UPSTREAM": "Google", "GOOGLE_API_KEY": "k", "PROJECT_ID": "p"}
    assert Config.from_env(google_key, env_file=None).ephemeral_upstream == "google"
    with pytest.raises(ConfigError, match="EPHEMERAL_UPSTREAM='vertex' is invalid"):
        Config.from_env({"EPHEMERAL_UPSTREAM": "vertex"}, env_file=None)


# The request Google gets -----------------------------------------------------------------------


def test_the_request_is_the_sdks() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = now + timedelta(seconds=180)
    full = EphemeralRequest(
        model="gemini-x",
        config={"generation_config": {"temperature": 0.2}, "system_instruction": "hi"},
        lock_additional_fields=("top_p", "tools"),
        uses=1,
    )
    assert google_request(full, "server-model", now, later) == {
        "uses": 1,
        "expireTime": "2030-01-02T03:07:05Z",
        "newSessionExpireTime": "2030-01-02T03:04:05Z",
        "bidiGenerateContentSetup": {
            "generationConfig": {"temperature": 0.2},
            "systemInstruction": {"parts": [{"text": "hi"}]},
            "model": "models/gemini-x",
        },
        "fieldMask": "generationConfig.temperature,systemInstruction.parts,model,"
        "generationConfig.topP,tools",
    }
    whole = google_request(EphemeralRequest(config={}), "models/server-model", now, later)
    assert whole["bidiGenerateContentSetup"] == {"model": "models/server-model"}
    assert "fieldMask" not in whole
    bare = google_request(EphemeralRequest(), "server-model", now, later)
    assert bare["fieldMask"] == "model"


def test_browser_shortcuts_become_a_setup() -> None:
    assert google_setup(
        {
            "input_audio_transcription": True,
            "outputAudioTranscription": False,
            "tools": {"googleSearch": {}},
        }
    ) == {"inputAudioTranscription": {}, "tools": [{"googleSearch": {}}]}


@pytest.mark.parametrize(
    ("live", "rest"),
    [
        (
            "wss://generativelanguage.googleapis.com/ws/x",
            "https://generativelanguage.googleapis.com",
        ),
        ("ws://127.0.0.1:9000/ws/x?key=1", "http://127.0.0.1:9000"),
        ("ws://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_googles_rest_base_follows_the_live_url(live: str, rest: str) -> None:
    assert rest_base(live) == rest
