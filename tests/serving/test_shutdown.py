"""Graceful shutdown of a real ``liveproxy serve`` process on SIGTERM."""

from __future__ import annotations

import signal

import trio
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.http import request
from tests.served import liveproxy_process
from tests.wsclient import BrowserClient, Ended

GRACE = 2.0


async def live_session(port: int, nursery: trio.Nursery, endings: list[Ended]) -> None:
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]

    async def run(task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            assert "setupComplete" in await client.recv_json()
            task_status.started()
            endings.append(await client.wait_closed())

    await nursery.start(run)


async def test_sigterm_ends_live_sessions_within_the_grace_and_exits_zero(
    emulator: Emulator,
) -> None:
    endings: list[Ended] = []
    async with liveproxy_process(
        GOOGLE_API_KEY="test-key",
        UPSTREAM_URL=emulator.url,
        SHUTDOWN_GRACE_SECONDS=str(GRACE),
        LOG_LEVEL="INFO",
    ) as served:
        port = served.port
        async with trio.open_nursery() as nursery:
            await live_session(port, nursery, endings)
            await live_session(port, nursery, endings)
            served.process.send_signal(signal.SIGTERM)
            start = trio.current_time()
            await trio.sleep(0.3)
            refused = await request("127.0.0.1", port, "POST", "/api/auth")
            assert refused.status == 503
            with trio.fail_after(GRACE + 8):
                status = await served.process.wait()
            elapsed = trio.current_time() - start
    log = served.log
    assert status == 0, "".join(log)
    assert GRACE - 0.1 <= elapsed <= GRACE + 5, "".join(log)
    assert len(endings) == 2
    for ended in endings:
        assert ended.code == 1001
        assert ended.last_event["sessionEnd"]["reason"] == "shutdown"
    records = emulator.connections
    assert [(r.ended_by, r.close_code) for r in records] == [("client", 1001)] * 2
    text = "".join(log)
    assert "shutting down: 2 live sessions" in text
    assert "test-key" not in text
    assert text.count("ended after") == 2
