"""One client's failure ends its own connection only: a real ``liveproxy serve`` process, 20
bystander sessions talking throughout, and the two inputs that killed Hypercorn 0.18.0."""

from __future__ import annotations

import signal
from functools import partial

import attrs
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.fuzz.wire import BINARY, TEXT, encode_frame
from tests.http import request
from tests.rawws import RawAnswer, open_raw, read_answer, read_head, upgrade
from tests.served import liveproxy_process
from tests.wsclient import BrowserClient, has_key, wait_until

BYSTANDERS = 20
LIMIT = 2 * 1024 * 1024  # the default MAX_MESSAGE_BYTES


@attrs.define
class Bystander:
    turns: int = 0


async def talk(port: int, bystander: Bystander, task_status: trio.TaskStatus[None]) -> None:
    """A session that answers text turns until cancelled; every failure fails the test."""
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()
        task_status.started()
        while True:
            await client.send_json({"type": "text", "text": f"turn {bystander.turns}"})
            await client.recv_until(has_key("serverContent", "turnComplete"))
            bystander.turns += 1
            await trio.sleep(0.01)  # under BROWSER_MESSAGE_RATE (400/s) on the fastest machine


async def early_data(port: int, token: str) -> RawAnswer:
    stream = await open_raw(port)
    async with stream:
        await upgrade(stream, f"/ws?token={token}", early=encode_frame(TEXT, b"hi"))
        return await read_answer(stream)


async def upgrade_with_body(port: int, token: str) -> RawAnswer:
    stream = await open_raw(port)
    async with stream:
        await upgrade(stream, f"/ws?token={token}", extra=b"Content-Length: 2\r\n", early=b"hi")
        return await read_answer(stream)


def oversize_then(first: int, then: int) -> object:
    async def run(port: int, token: str) -> RawAnswer:
        stream = await open_raw(port)
        async with stream:
            await upgrade(stream, f"/ws?token={token}")
            head = await read_head(stream)
            await stream.send_all(encode_frame(TEXT, orjson.dumps(TEXT_SETUP)))
            try:
                await stream.send_all(encode_frame(first, b"a" * (LIMIT + 1024)))
                await stream.send_all(encode_frame(then, b"ab"))
            except trio.BrokenResourceError:
                pass
            return await read_answer(stream, head)

    return run


def all_answered_twice_since(bystanders: list[Bystander], before: list[int]) -> bool:
    return all(b.turns >= n + 2 for b, n in zip(bystanders, before, strict=True))


ATTACKS = [
    ("early-data", early_data, 400, None),
    ("upgrade-with-body", upgrade_with_body, 400, None),
    ("5-mib-text-then-binary", oversize_then(TEXT, BINARY), 101, 1009),
    ("5-mib-binary-then-text", oversize_then(BINARY, TEXT), 101, 1009),
]


@pytest.mark.timeout(60)
async def test_crashing_inputs_close_their_connection_and_20_bystanders_go_on(
    emulator: Emulator,
) -> None:
    bystanders = [Bystander() for _ in range(BYSTANDERS)]
    async with liveproxy_process(
        GOOGLE_API_KEY="test-key",
        UPSTREAM_URL=emulator.url,
        MAX_SESSIONS="100",
        # 20 bystanders and the attacks all come from 127.0.0.1.
        MAX_SESSIONS_PER_CLIENT="0",
        AUTH_RATE_LIMIT="0",
    ) as served:
        port, process = served.port, served.process
        async with trio.open_nursery() as nursery:
            for bystander in bystanders:
                await nursery.start(talk, port, bystander)
            for name, attack, status, close_code in ATTACKS:
                token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()
                before = [b.turns for b in bystanders]
                with trio.fail_after(10):
                    answer = await attack(port, token["session_token"])  # type: ignore[operator]
                assert (answer.status, answer.close_code) == (status, close_code), name
                assert process.returncode is None, name
                await wait_until(partial(all_answered_twice_since, bystanders, before))
            nursery.cancel_scope.cancel()  # the bystanders leave
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            status = await process.wait()
    text = served.text
    assert status == 0, text
    assert "Traceback" not in text
    assert "failed and was closed" not in text  # the fixes answer these before the net
