"""Graceful shutdown of a real ``liveproxy serve`` process on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import trio
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.http import request
from tests.wsclient import BrowserClient, Ended

GRACE = 2.0


async def read_port(stderr: trio.abc.ReceiveStream, log: list[str]) -> int:
    buffer = b""
    while True:
        chunk = await stderr.receive_some(4096)
        assert chunk, "the server exited before listening:\n" + buffer.decode()
        buffer += chunk
        match = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", buffer)
        if match:
            log.append(buffer.decode())
            return int(match.group(1))


async def drain(stderr: trio.abc.ReceiveStream, log: list[str]) -> None:
    async for chunk in stderr:
        log.append(chunk.decode())


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
    env = dict(
        os.environ,
        PORT="0",
        HOST="127.0.0.1",
        GOOGLE_API_KEY="test-key",
        UPSTREAM_URL=emulator.url,
        SHUTDOWN_GRACE_SECONDS=str(GRACE),
        LOG_LEVEL="INFO",
    )
    log: list[str] = []
    endings: list[Ended] = []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "liveproxy", "serve"], env=env, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        with trio.fail_after(20):
            port = await read_port(process.stderr, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, process.stderr, log)
            await live_session(port, nursery, endings)
            await live_session(port, nursery, endings)
            process.send_signal(signal.SIGTERM)
            start = trio.current_time()
            await trio.sleep(0.3)
            refused = await request("127.0.0.1", port, "POST", "/api/auth")
            assert refused.status == 503
            with trio.fail_after(GRACE + 8):
                status = await process.wait()
            elapsed = trio.current_time() - start
    finally:
        if process.returncode is None:
            process.kill()
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
