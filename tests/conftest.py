"""Fixtures: the real emulator and the real proxy (Hypercorn on port 0), both in the test's run."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from hypothesis.configuration import set_hypothesis_home_dir
from trio_websocket import open_websocket_url

from liveproxy.config import Config
from liveproxy.emulator import Emulator, EmulatorConfig
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.server import serve
from liveproxy.store.opening import open_store
from liveproxy.upstream.target import UpstreamTarget
from liveproxy.web.app import LiveProxyApp, create_app
from liveproxy.web.state import ProxyState
from tests.http import HttpResponse, request
from tests.models import TEST_MODEL
from tests.wsclient import BrowserClient, wait_until

if TYPE_CHECKING:  # registered as a plugin below: imported first by pytest, asserts rewritten
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]  # the redis_server fixture: a private redis-server


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its files out of the repository (even with ``database=None`` it writes
    caches under ``./.hypothesis``): in pytest's cache directory, so the Unicode tables it takes
    seconds to build are built once; without pytest's cache (``-p no:cacheprovider``, as
    ``make fuzz`` runs), in a temporary directory that goes away with the test process."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        home = str(cache.mkdir("hypothesis"))
    else:
        home = tempfile.mkdtemp(prefix="liveproxy-hypothesis-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    set_hypothesis_home_dir(home)


TEXT_SETUP: dict[str, Any] = {"setup": {"generation_config": {"response_modalities": ["TEXT"]}}}
AUDIO_SETUP: dict[str, Any] = {
    "setup": {
        "generation_config": {"response_modalities": ["AUDIO"]},
        "input_audio_transcription": {},
        "output_audio_transcription": {},
    }
}


@attrs.define
class Proxy:
    """A running proxy and the emulator behind it."""

    port: int
    app: LiveProxyApp
    emulator: Emulator
    stop: trio.Event

    @property
    def state(self) -> ProxyState:
        return self.app.proxy

    async def http(self, method: str, path: str, body: bytes | None = None) -> HttpResponse:
        return await request("127.0.0.1", self.port, method, path, body)

    async def token(self, duration: int | None = None) -> str:
        body = b"" if duration is None else b'{"session_duration": %d}' % duration
        response = await self.http("POST", "/api/auth", body)
        assert response.status == 200, response.body
        token: str = response.json()["session_token"]
        return token

    def ws_url(self, token: str | None) -> str:
        query = "" if token is None else f"?token={token}"
        return f"ws://127.0.0.1:{self.port}/ws{query}"

    @asynccontextmanager
    async def connect(self, token: str | None = None) -> AsyncIterator[BrowserClient]:
        """A browser WebSocket (with a fresh token unless one is given)."""
        token = token if token is not None else await self.token()
        async with open_websocket_url(self.ws_url(token), max_message_size=2**24) as ws:
            yield BrowserClient(ws)

    @asynccontextmanager
    async def session(
        self, setup: dict[str, Any] | None = None, *, duration: int | None = None
    ) -> AsyncIterator[BrowserClient]:
        """A browser session past ``setupComplete`` (and the ``sessionResumable`` after it)."""
        async with self.connect(await self.token(duration)) as client:
            await client.send_json(TEXT_SETUP if setup is None else setup)
            assert "setupComplete" in await client.recv_json()
            if self.state.config.resume_window_seconds:
                assert "sessionResumable" in await client.recv_json()
            yield client


ProxyFactory = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> Emulator:
    started: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    return started


def proxy_config(upstream: Emulator, **settings: Any) -> Config:
    """A proxy's settings against ``upstream``: any free port, the emulator's test key and
    :data:`TEST_MODEL`, unless ``settings`` say otherwise."""
    defaults: dict[str, Any] = {
        "port": 0,
        "api_key": "test-key",
        "upstream_url": upstream.url,
        "model": TEST_MODEL,
    }
    return Config(**(defaults | settings))


@pytest.fixture
async def make_proxy(nursery: trio.Nursery, emulator: Emulator) -> AsyncIterator[ProxyFactory]:
    """Start proxies against ``emulator``; after the test, every gauge must be back at zero."""
    proxies: list[Proxy] = []

    async def make(
        *, target: UpstreamTarget | None = None, emulator_: Emulator | None = None, **settings: Any
    ) -> Proxy:
        upstream = emulator_ or emulator
        config = proxy_config(upstream, **settings)
        app = create_app(config, target=target)
        stop = trio.Event()
        binds = await nursery.start(partial(serve, config, stop=stop, app=app))
        proxy = Proxy(int(binds[0].rsplit(":", 1)[1]), app, upstream, stop)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        with trio.fail_after(10):
            await proxy.state.gauges.wait_idle()
        assert proxy.state.gauges.live_sessions == 0
        assert proxy.state.gauges.upstream_connections == 0
    await wait_until(lambda: emulator.live_count == 0)


@pytest.fixture
async def proxy(make_proxy: ProxyFactory) -> Proxy:
    return await make_proxy()


@asynccontextmanager
async def proxy_on(
    kind: str, emulator: Emulator, tmp_path: Path, redis: RedisServer | None, **settings: Any
) -> AsyncIterator[Proxy]:
    """A proxy (in this process, against ``emulator``) on a store of ``kind``."""
    urls = {
        "memory": "memory:",
        "sqlite": f"sqlite://{tmp_path / 'state.db'}",
        "redis": redis.url if redis is not None else "",
    }
    config = proxy_config(emulator, auth_rate_limit=None, **settings)
    async with open_store(urls[kind], config.session_lease_seconds) as store:
        app = create_app(config, store=store)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, config, stop=stop, app=app))
            yield Proxy(int(binds[0].rsplit(":", 1)[1]), app, emulator, stop)
            stop.set()
