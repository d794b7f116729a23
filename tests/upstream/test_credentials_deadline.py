"""A Vertex token refresh is part of the upstream setup: under its deadline, and cancellable.

google-auth refreshes with blocking HTTP in a worker thread. Here its credentials are a stand-in
whose refresh blocks like a token endpoint that never answers (until the test releases it), behind
the real :class:`~liveproxy.core.credentials.GoogleAuth`, the real proxy and the emulator.

Times are trio's, on a clock that moves only when the test says (``mock_clock``, rate 0): a real
thread is waited for by its own event, in real time, before the clock is moved past a deadline.
(Under the autojump clock, virtual time could pass a deadline before the thread even started.)
Once the deadlines are checked the clock runs at real speed, for what follows.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from google.auth import credentials as google_credentials
from google.auth import exceptions as google_exceptions

from liveproxy.config import DEFAULT_MODEL, Config
from liveproxy.emulator import Emulator
from liveproxy.upstream.connection import GeminiUpstream
from liveproxy.upstream.credentials import GoogleAuth
from liveproxy.upstream.startup import google_target
from tests.conftest import AUDIO_SETUP, Proxy, ProxyFactory
from tests.core.test_session_endings import assert_error
from tests.wsclient import Ended

SETUP_TIMEOUT = 10.0
VERTEX = {
    "api_key": None,
    "project_id": "proj-1",
    "location": "europe-west4",
    "model": DEFAULT_MODEL,
}
#: Wall-clock bound on a stuck refresh, so a failing test cannot leave its thread behind.
THREAD_LIMIT = 30.0


class HangingCredentials(google_credentials.Credentials):
    """OAuth credentials whose refresh blocks until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.release = threading.Event()
        self.started = threading.Event()
        self.refresh_threads: list[str] = []

    def refresh(self, request: Any) -> None:
        self.refresh_threads.append(threading.current_thread().name)
        self.started.set()
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


async def in_real_time(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, held by threads or sockets, polling in real time (the trio clock
    may not move); fail after :data:`THREAD_LIMIT` seconds."""
    deadline = time.monotonic() + THREAD_LIMIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await trio.to_thread.run_sync(time.sleep, 0.005)


async def failed_setup(
    proxy: Proxy, clock: trio.testing.MockClock, ready: Callable[[], bool]
) -> tuple[Ended, float]:
    """A browser session whose setup hangs until ``ready()`` (its refresh is stuck); then the
    clock passes the setup timeout. How it ended, and how long after the setup (trio time)."""
    async with proxy.connect() as client:
        await client.send_json(AUDIO_SETUP)
        start = trio.current_time()
        await in_real_time(ready)
        clock.jump(SETUP_TIMEOUT)
        ended = await client.wait_closed()  # before the fix, nothing ended it
        return ended, trio.current_time() - start


async def test_a_hanging_token_refresh_is_upstream_unavailable_at_the_setup_timeout(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    mock_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=SETUP_TIMEOUT)
    ended, elapsed = await failed_setup(proxy, mock_clock, hanging.started.is_set)
    assert_error(ended, "upstream_unavailable", 1013)
    assert elapsed == SETUP_TIMEOUT
    assert len(hanging.refresh_threads) == 1
    assert hanging.refresh_threads[0] != threading.main_thread().name
    assert emulator.connections == []  # never got as far as dialling
    mock_clock.rate = 1.0


async def test_the_browser_leaving_ends_the_session_during_a_hanging_refresh(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    mock_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=600)
    async with proxy.connect() as client:
        await client.send_json(AUDIO_SETUP)
        await in_real_time(hanging.started.is_set)
        assert proxy.state.gauges.live_sessions == 1
    left = trio.current_time()
    # Before the fix: held by the thread, i.e. until the token came (never: the clock stands).
    await proxy.state.gauges.wait_idle()
    assert trio.current_time() == left
    assert proxy.state.gauges.live_sessions == 0
    assert not hanging.release.is_set()  # the thread is still stuck: the session did not wait
    mock_clock.rate = 1.0


async def test_a_stuck_refresh_costs_one_thread_and_its_token_serves_later_sessions(
    make_proxy: ProxyFactory,
    emulator: Emulator,
    hanging: HangingCredentials,
    mock_clock: trio.testing.MockClock,
) -> None:
    proxy = await vertex_proxy(make_proxy, emulator, hanging, setup_timeout_seconds=SETUP_TIMEOUT)
    upstream = proxy.state.services.upstream
    assert isinstance(upstream, GeminiUpstream)
    assert isinstance(upstream.target.credentials, GoogleAuth)
    refreshing = upstream.target.credentials._refreshing
    results: list[tuple[Ended, float]] = []

    def two_waiting() -> bool:  # one refresh thread runs, the second session waits for it
        stats = refreshing.statistics()
        return stats.borrowed_tokens == 1 and stats.tasks_waiting == 1

    def one_waiting() -> bool:  # the abandoned thread still holds its token
        return refreshing.statistics().tasks_waiting == 1

    async def attempt(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with proxy.connect() as client:
            await client.send_json(AUDIO_SETUP)
            start = trio.current_time()
            task_status.started()
            ended = await client.wait_closed()
        results.append((ended, trio.current_time() - start))

    async with trio.open_nursery() as nursery:  # two at once, while the token endpoint hangs
        await nursery.start(attempt)
        await nursery.start(attempt)
        await in_real_time(two_waiting)
        mock_clock.jump(SETUP_TIMEOUT)
    results.append(await failed_setup(proxy, mock_clock, one_waiting))  # and one after
    for ended, elapsed in results:
        assert_error(ended, "upstream_unavailable", 1013)
        assert elapsed == SETUP_TIMEOUT
    assert len(hanging.refresh_threads) == 1

    mock_clock.rate = 1.0
    hanging.release.set()  # the endpoint answers at last: the abandoned thread stores the token
    await in_real_time(lambda: hanging.valid)
    async with proxy.session(AUDIO_SETUP):
        record = emulator.connections[-1]
    assert (record.credential_kind, record.credential) == ("bearer", "ya29.late")
    assert len(hanging.refresh_threads) == 1  # no second refresh was needed
