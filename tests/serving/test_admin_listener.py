"""The ``ADMIN_BIND`` listener in real ``liveproxy serve`` processes: off unless configured,
refused at start without a long enough token, served once per host (by the supervisor with
workers), and ending a session in whichever worker holds it."""

from __future__ import annotations

import re
from contextlib import AsyncExitStack

import psutil
import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.serving.metrics_listener import KEEP_ALIVE_SECONDS
from liveproxy.web.leases import OPERATOR_POLL_SECONDS
from tests.conftest import TEXT_SETUP
from tests.http import HttpResponse, request
from tests.served import Served, liveproxy_process, serve_refused
from tests.serving.test_cli import IN_USE, held_port, serve_to_the_end
from tests.wsclient import BrowserClient, has_key

TOKEN = "a-long-enough-operator-token-0123456789"
ADMIN = {"ADMIN_BIND": "127.0.0.1:0", "ADMIN_TOKEN": TOKEN}
SETTINGS = {"AUTH_RATE_LIMIT": "0", "MAX_SESSIONS_PER_CLIENT": "0", "RESUME_WINDOW_SECONDS": "0"}


def listening(served: Served) -> set[int]:
    """The TCP ports the process listens on."""
    connections = psutil.Process(served.process.pid).net_connections(kind="tcp")
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


async def admin_port(served: Served) -> int:
    await served.wait_for(lambda text: "operator's view on" in text)
    found = re.search(r"operator's view on http://127\.0\.0\.1:(\d+)", served.text)
    assert found is not None, served.text
    return int(found.group(1))


async def admin(port: int, method: str, path: str) -> HttpResponse:
    return await request(
        "127.0.0.1", port, method, path, headers={"Authorization": f"Bearer {TOKEN}"}
    )


def test_a_short_admin_token_refuses_to_start_in_one_line() -> None:
    for token in ("", "too-short"):
        done = serve_refused({"ADMIN_BIND": "127.0.0.1:0", "ADMIN_TOKEN": token})
        assert done.returncode == 2
        assert done.stderr == (
            "liveproxy: configuration error: ADMIN_BIND needs ADMIN_TOKEN of at least 32 bytes"
            f" (got {len(token)}): e.g. `openssl rand -hex 32`\n"
        )


async def test_nothing_listens_for_the_operator_unless_configured() -> None:
    # Besides the proxy's port, the built-in emulator's.
    async with liveproxy_process(**SETTINGS) as served:
        without = listening(served)
        assert served.port in without
        assert len(without) == 2
        assert "operator's view" not in served.text
    async with liveproxy_process(**SETTINGS, **ADMIN) as served:
        port = await admin_port(served)
        with_admin = listening(served)
        assert {served.port, port} <= with_admin
        assert len(with_admin) == 3
        assert (await admin(port, "GET", "/sessions")).json() == {
            "sessions": [],
            "next_cursor": None,
        }
        # The proxy's own port has no operator's view.
        assert (await admin(served.port, "GET", "/sessions")).status == 404


async def test_with_workers_the_supervisor_serves_it_and_ends_a_session_in_any_worker() -> None:
    async with (
        liveproxy_process(WORKERS="2", **SETTINGS, **ADMIN) as served,
        AsyncExitStack() as stack,
    ):
        port = await admin_port(served)
        supervisor = psutil.Process(served.process.pid)
        assert port in {
            c.laddr.port for c in supervisor.net_connections(kind="tcp") if c.status == "LISTEN"
        }
        clients = []
        for _ in range(6):  # spread over both workers by the kernel
            minted = await request("127.0.0.1", served.port, "POST", "/api/auth")
            url = f"ws://127.0.0.1:{served.port}/ws?token={minted.json()['session_token']}"
            client = BrowserClient(await stack.enter_async_context(open_websocket_url(url)))
            await client.send_json(TEXT_SETUP)
            await client.recv_until(has_key("setupComplete"))
            clients.append(client)
        with trio.fail_after(OPERATOR_POLL_SECONDS + 5):
            while len(listed := (await admin(port, "GET", "/sessions")).json()["sessions"]) < 6:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert {s["worker"] for s in listed} <= {1, 2}
        # Every session, in whichever worker it runs, ended from the supervisor's listener.
        for shown in listed:
            assert (await admin(port, "DELETE", f"/sessions/{shown['id']}")).status == 202
        with trio.fail_after(OPERATOR_POLL_SECONDS + 3):
            for client in clients:
                closed = await client.wait_closed()
                assert (closed.code, closed.reason) == (1000, "ended_by_operator")
        with trio.fail_after(OPERATOR_POLL_SECONDS + 3):
            while (await admin(port, "GET", "/sessions")).json()["sessions"]:  # noqa: ASYNC110
                await trio.sleep(0.1)
        # A client that sends nothing is not kept.
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(KEEP_ALIVE_SECONDS + 2):
            assert await idle.receive_some(1) == b""
        await idle.aclose()
    assert "Traceback" not in served.text


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_admin_port_in_use_is_one_line_and_exit_1(workers: str) -> None:
    with held_port() as port:
        done = await serve_to_the_end(
            WORKERS=workers, ADMIN_BIND=f"127.0.0.1:{port}", ADMIN_TOKEN=TOKEN
        )
    expected = f"liveproxy: cannot listen on 127.0.0.1:{port} (ADMIN_BIND): {IN_USE}\n"
    assert (done.returncode, done.stderr.decode()) == (1, expected)
