"""A real ``liveproxy serve`` process for tests: started on port 0, its stderr collected."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.http import request
from tests.models import TEST_MODEL


@attrs.define
class Served:
    """A running ``liveproxy serve``: the process, the port it listens on, its stderr so far."""

    process: trio.Process
    port: int
    log: list[str]

    @property
    def text(self) -> str:
        return "".join(self.log)

    async def wait_for(self, done: Callable[[str], bool]) -> None:
        """Wait until ``done(text)`` holds; fail after 10 seconds."""
        with trio.fail_after(10):
            while not done(self.text):  # noqa: ASYNC110 - another task fills the log
                await trio.sleep(0.01)


def liveproxy_process(**settings: str) -> AbstractAsyncContextManager[Served]:
    """:func:`liveproxy_serve` without arguments."""
    return liveproxy_serve((), settings)


@asynccontextmanager
async def liveproxy_serve(
    argv: Sequence[str], settings: Mapping[str, str]
) -> AsyncIterator[Served]:
    """Run ``python -m liveproxy serve ARGV`` with ``settings`` as environment variables over
    ours.

    ``PORT=0``, ``HOST=127.0.0.1`` and ``MODEL=TEST_MODEL`` unless given. Yields once it
    listens; on exit, a process still running is killed, and the log holds everything it wrote.
    """
    env = dict(os.environ, PORT="0", HOST="127.0.0.1", MODEL=TEST_MODEL)
    env.update(settings)
    log: list[str] = []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "liveproxy", "serve", *argv], env=env, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        with trio.fail_after(20):
            port = await _read_port(process.stderr, log, int(settings.get("WORKERS", "1")))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr, log)
            try:
                yield Served(process, port, log)
            finally:
                if process.returncode is None:
                    process.kill()
    finally:
        if process.returncode is None:
            process.kill()


@asynccontextmanager
async def signed_in_socket(port: int, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """A ``/ws`` socket to the server on ``port`` with a session token just signed in for
    (``POST /api/auth``); ``options`` are trio-websocket's."""
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()
    url = f"ws://127.0.0.1:{port}/ws?token={token['session_token']}"
    async with open_websocket_url(url, **options) as ws:
        yield ws


def serve_refused(
    settings: Mapping[str, str], *, cwd: Path | None = None, unset: Collection[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m liveproxy serve`` until it exits (within 30 s), in ``cwd``, with
    ``settings`` over our environment less ``unset``; ``PORT=0`` unless given. For a start-up
    it refuses: the exit code and the lines it wrote."""
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env["PORT"] = "0"
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "liveproxy", "serve"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def _read_port(stderr: trio.abc.ReceiveStream, log: list[str], workers: int) -> int:
    """The port, once the server listens (with several workers: once all of them do)."""
    ready = rb"Running on http://127\.0\.0\.1:(\d+)"
    if workers > 1:
        ready += rb" with \d+ workers"
    buffer = b""
    while True:
        chunk = await stderr.receive_some(4096)
        assert chunk, "the server exited before listening:\n" + buffer.decode()
        buffer += chunk
        match = re.search(ready, buffer)
        if match:
            log.append(buffer.decode())
            return int(match.group(1))


async def _drain(stderr: trio.abc.ReceiveStream, log: list[str]) -> None:
    async for chunk in stderr:
        log.append(chunk.decode())


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Poll ``check`` until it is true; fail after ``within`` seconds. Returns the time taken.

    For state held by other processes (a store's leases, a log) that offer nothing to wait on.
    """
    started = trio.current_time()
    with trio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - another process holds the state
            await trio.sleep(0.05)
    return trio.current_time() - started
