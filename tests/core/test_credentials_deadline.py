"""A Vertex token refresh is part of the upstream setup: under its deadline, and cancellable.

google-auth refreshes with blocking HTTP in a worker thread. Here its credentials are a stand-in
whose refresh blocks like a token endpoint that never answers (until the test releases it), behind
the real :class:`~liveproxy.core.credentials.GoogleAuth`, the real proxy and the emulator. Times are
trio's (autojump clock).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from google.auth import credentials as google_credentials
from google.auth import exceptions as google_exceptions

from liveproxy.config import DEFAULT_VERTEX_MODEL, Config
from liveproxy.core.credentials import GoogleAuth
from liveproxy.emulator import Emulator
from liveproxy.web.app import google_target
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.core.test_session_endings import assert_error
from tests.wsclient import Ended, wait_until

SETUP_TIMEOUT = 10.0
VERTEX = {
    "api_key": None,
    "project_id": "proj-1",
    "location": "europe-west4",
    "model": DEFAULT_VERTEX_MODEL,
}
#: Wall-clock bound on a stuck refresh, so a failing test cannot leave its thread behind.
THREAD_LIMIT = 30.0


class HangingCredentials(google_credentials.Credentials):
    """OAuth credentials whose refresh blocks until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.release = threading.Event()
        self.refresh_threads: list[str] = []

    def refresh(self, request: Any) -> None:
        self.refresh_threads.append(threading.current_thread().name)
        if not self.release.wait(THREAD_LIMIT):
            raise google_exceptions.RefreshError("no answer")  # type: ignore[no-untyped-call]
        self.token = "ya29.late"
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(
            hours=1
        )


@pytest.fixture
def hanging() -> Iterator[HangingCredentials]:
    stand_in = HangingCredentials()
    yield stand_in
    stand_in.release.set()


async def vertex_proxy(
    make_proxy: ProxyFactory, emulator: Emulator, stand_in: HangingCredentials, **settings: Any
) -> Proxy:
    config = Config(upstream_url=emulator.url, **VERTEX)  # type: ignore[arg-type]
    target = await google_target(config, GoogleAuth(stand_in))
    return await make_proxy(target=target, **VERTEX, **settings)


async def failed_setup(proxy: Proxy) -> tuple[Ended, float]:
    """A browser session whose setup fails: how it ended, and how long after the setup."""
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        start = trio.current_time()
        with trio.fail_after(6 * SETUP_TIMEOUT):  # before the fix, nothing ended it
            ended = await client.wait_closed()
        return ended, trio.current_time() - start


async def test_a_hanging_token_refresh_is_upstream_unavailable_at_the_setup_timeout(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    autojump_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=SETUP_TIMEOUT)
    ended, elapsed = await failed_setup(proxy)
    assert_error(ended, "upstream_unavailable", 1013)
    assert elapsed == pytest.approx(SETUP_TIMEOUT, abs=0.5)
    # (With the autojump clock the deadline can pass before the thread has even started.)
    await wait_until(lambda: len(hanging.refresh_threads) == 1)
    assert hanging.refresh_threads[0] != threading.main_thread().name
    assert emulator.connections == []  # never got as far as dialling


async def test_the_browser_leaving_ends_the_session_during_a_hanging_refresh(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    autojump_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=600)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        await wait_until(lambda: bool(hanging.refresh_threads))
        assert proxy.state.gauges.live_sessions == 1
    left = trio.current_time()
    with trio.fail_after(5):  # before the fix: held by the thread, i.e. until the token came
        await proxy.state.gauges.wait_idle()
    assert trio.current_time() - left < 0.5
    assert proxy.state.gauges.live_sessions == 0
    assert not hanging.release.is_set()  # the thread is still stuck: the session did not wait


async def test_a_stuck_refresh_costs_one_thread_and_its_token_serves_later_sessions(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    autojump_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=SETUP_TIMEOUT)
    results: list[tuple[Ended, float]] = []

    async def attempt() -> None:
        results.append(await failed_setup(proxy))

    async with trio.open_nursery() as nursery:  # two at once, while the token endpoint hangs
        nursery.start_soon(attempt)
        nursery.start_soon(attempt)
    await attempt()  # and one after they gave up on the (abandoned, still running) thread
    for ended, elapsed in results:
        assert_error(ended, "upstream_unavailable", 1013)
        assert elapsed == pytest.approx(SETUP_TIMEOUT, abs=0.5)
    await wait_until(lambda: len(hanging.refresh_threads) == 1)

    hanging.release.set()  # the endpoint answers at last: the abandoned thread stores the token
    await wait_until(lambda: hanging.valid)
    async with proxy.session():
        record = emulator.connections[-1]
    assert (record.credential_kind, record.credential) == ("bearer", "ya29.late")
    assert len(hanging.refresh_threads) == 1  # no second refresh was needed
