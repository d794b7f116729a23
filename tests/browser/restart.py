"""A ``liveproxy serve`` restarted under a page (the resume tests of both demo pages): two
processes one after the other on a fixed port (the page's URL must not change), the restart's
steps taken when the browser's thread says."""

from __future__ import annotations

import signal
import socket

import attrs
import trio

from liveproxy.emulator import Emulator
from tests.served import Served, liveproxy_process

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@attrs.define
class Restart:
    """The restart's two steps, each taken from the browser's thread (``trio.from_thread.run``)
    and done by :func:`serve_twice`: stop the first process, start the second."""

    stop_now: trio.Event = attrs.Factory(trio.Event)
    stopped: trio.Event = attrs.Factory(trio.Event)
    start_now: trio.Event = attrs.Factory(trio.Event)
    started: trio.Event = attrs.Factory(trio.Event)

    async def stop(self) -> None:
        """SIGTERM the first process; return once it has exited."""
        self.stop_now.set()
        await self.stopped.wait()

    async def start(self) -> None:
        """Start the second process; return once it listens."""
        self.start_now.set()
        await self.started.wait()


def free_port() -> int:
    """A port nothing listens on now, for both processes (the page's URL stays the same)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def restart_env(key: str, emulator: Emulator, port: int) -> dict[str, str]:
    """The settings of both processes: in front of ``emulator``, on ``port``, and no grace on
    SIGTERM (the page's socket gets ``sessionEnd`` ``shutdown`` and 1001 at once)."""
    return {
        "GOOGLE_API_KEY": key,
        "UPSTREAM_URL": f"{emulator.url}{LIVE_PATH}",
        "PORT": str(port),
        "SHUTDOWN_GRACE_SECONDS": "0",
    }


async def serve_twice(
    first: dict[str, str],
    second: dict[str, str],
    restart: Restart,
    served: list[Served],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One ``liveproxy serve`` (``first``: its settings), then another (``second``) on its port,
    as ``restart`` says; returns when the second one exits."""
    async with liveproxy_process(**first) as process:
        served.append(process)
        task_status.started()
        await restart.stop_now.wait()
        process.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await process.process.wait()
    restart.stopped.set()
    await restart.start_now.wait()
    async with liveproxy_process(**second) as process:
        served.append(process)
        restart.started.set()
        await process.process.wait()


async def stop_all(served: list[Served]) -> None:
    """SIGTERM the processes still running; return once they have exited."""
    for process in served:
        if process.process.returncode is None:
            process.process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await process.process.wait()
