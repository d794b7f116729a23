"""Upstream backends: Vertex AI with OAuth credentials, and the built-in emulator mode."""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import pytest
from google.auth import credentials as google_credentials

from liveproxy.config import DEFAULT_MODEL, Config
from liveproxy.emulator import Emulator
from liveproxy.upstream.credentials import GoogleAuth
from liveproxy.upstream.startup import google_target
from tests.conftest import AUDIO_SETUP, TEXT_SETUP, ProxyFactory
from tests.models import TEST_MODEL_STATUS
from tests.wsclient import has_key, texts


class StandInCredentials(google_credentials.Credentials):
    """OAuth credentials whose refresh mints a local token instead of calling Google."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.refresh_threads: list[str] = []

    def refresh(self, request: Any) -> None:
        self.refresh_threads.append(threading.current_thread().name)
        self.token = f"ya29.stand-in-{len(self.refresh_threads)}"
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(
            hours=1
        )


async def test_vertex_uses_its_url_model_path_and_a_bearer_refreshed_off_the_loop(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    stand_in = StandInCredentials()
    settings = {
        "api_key": None,
        "project_id": "proj-1",
        "location": "europe-west4",
        "model": DEFAULT_MODEL,
    }
    config = Config(upstream_url=emulator.url, **settings)  # type: ignore[arg-type]
    target = await google_target(config, GoogleAuth(stand_in))
    proxy = await make_proxy(target=target, **settings)
    for _ in range(2):
        async with proxy.connect() as client:
            await client.send_json(AUDIO_SETUP)  # Vertex's Live models speak audio only
            setup_complete = await client.recv_json()
            assert setup_complete["setupComplete"]["sessionId"]  # Vertex's extra passes through
            await client.send_json({"type": "text", "text": "hola"})
            await client.recv_until(has_key("serverContent", "turnComplete"))
    first, second = emulator.connections
    assert first.path == "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    assert first.api == "vertex"
    assert first.model == (
        f"projects/proj-1/locations/europe-west4/publishers/google/models/{DEFAULT_MODEL}"
    )
    assert (first.credential_kind, first.credential) == ("bearer", "ya29.stand-in-1")
    assert second.credential == "ya29.stand-in-1"  # still valid: not refreshed again
    assert len(stand_in.refresh_threads) == 1
    assert stand_in.refresh_threads[0] != threading.main_thread().name
    assert "x-goog-api-key" not in first.headers


async def test_an_expired_vertex_token_is_refreshed(emulator: Emulator) -> None:
    stand_in = StandInCredentials()
    auth = GoogleAuth(stand_in)
    await auth.headers()
    stand_in.expiry = datetime.datetime(2000, 1, 1)
    headers = dict(await auth.headers())
    assert headers[b"authorization"] == b"Bearer ya29.stand-in-2"
    assert auth.refreshes == 2


async def test_the_api_key_goes_in_a_header_never_in_the_url(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    proxy = await make_proxy(api_key="key-in-header")
    async with proxy.session():
        record = emulator.connections[-1]
    assert record.headers["x-goog-api-key"] == "key-in-header"
    assert record.credential_kind == "api_key"
    assert record.query == {}
    assert record.path == (
        "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )


async def test_without_credentials_the_builtin_emulator_is_the_upstream(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liveproxy")
    proxy = await make_proxy(api_key=None, upstream_url=None)
    status = await proxy.http("GET", "/api/status")
    assert status.json() == {
        "status": "ok",
        "mode": "emulator",
        "missing": ["GOOGLE_API_KEY"],
        "models": [TEST_MODEL_STATUS],
        "botCheck": None,
    }
    assert any("built-in Gemini Live emulator" in r.getMessage() for r in caplog.records)
    async with proxy.session(TEXT_SETUP) as client:
        await client.send_json({"type": "text", "text": "anyone there?"})
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    assert "anyone there?" in "".join(texts(frames))
    assert proxy.emulator.connections == []  # the fixture's emulator was not used


async def test_simple_mode_reports_what_is_missing_and_sessions_fail_clearly(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(api_key=None, upstream_url=None, use_emulator=False)
    status = await proxy.http("GET", "/api/status")
    assert status.json() == {
        "status": "ok",
        "mode": "simple",
        "missing": ["GOOGLE_API_KEY"],
        "models": [TEST_MODEL_STATUS],
        "botCheck": None,
    }
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        ended = await client.wait_closed()
    assert ended.code == 1013
    assert ended.last_event["error"]["code"] == "upstream_unavailable"
    assert "GOOGLE_API_KEY" in ended.last_event["error"]["message"]
