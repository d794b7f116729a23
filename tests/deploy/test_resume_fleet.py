"""Conversations that outlive a socket, for real: two instances sharing Redis behind nginx.

A conversation of several turns is on one instance; that instance is redeployed (SIGTERM), or
the browser's TCP connection is cut with no close frame; the browser resumes through nginx and
lands on whichever instance nginx picks (the other one, when the first is draining). The
emulator shows the same Gemini conversation continuing: its id, the handle it issued last, and
its turn count; the time left and the stats carry over.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
import trio

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.deploy.test_nginx import ORIGIN, Fleet, Tls, fleet, tls, turn
from tests.http import HttpResponse, request
from tests.redis_server import RedisServer
from tests.served import eventually
from tests.wsclient import BrowserClient, has_key

__all__ = ["tls"]  # the fixture, used by name
WINDOW = 2.0


async def sign_in(f: Fleet, body: dict[str, Any], origin: str = ORIGIN) -> HttpResponse:
    return await request(
        "127.0.0.1",
        f.nginx.https_port,
        "POST",
        "/api/auth",
        orjson.dumps(body),
        {"Origin": origin, "Content-Type": "application/json"},
        ssl_context=f.tls,
    )


async def open_conversation(
    f: Fleet, stack: AsyncExitStack, body: dict[str, Any]
) -> tuple[BrowserClient, str, int]:
    """A socket through nginx past setupComplete: the client, its resume token, time limit."""
    answer = await sign_in(f, body)
    assert answer.status == 200, answer.body
    client = BrowserClient(await stack.enter_async_context(f.ws(answer.json()["session_token"])))
    await client.send_json(TEXT_SETUP)  # what the app always sends, also when resuming
    assert "setupComplete" in await client.recv_json()
    frame = (await client.recv_until(has_key("sessionResumable")))[-1]
    assert isinstance(frame, str)
    return (
        client,
        orjson.loads(frame)["sessionResumable"]["token"],
        answer.json()["session_time_limit"],
    )


def holder(f: Fleet) -> tuple[Any, Any]:
    """(the instance that started the only session so far, the other one)."""
    a_started = "started (limit" in f.a.text
    return (f.a, f.b) if a_started else (f.b, f.a)


async def test_a_redeploy_keeps_the_conversation(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    async with fleet(tmp_path, redis_server, emulator, tls) as f, AsyncExitStack() as stack:
        client, resume, limit = await open_conversation(f, stack, {"session_duration": 300})
        assert limit == 300
        for word in ("one", "two", "three"):
            await turn(client, word)
        first_socket = emulator.connections[-1]
        assert first_socket.conversation is not None
        assert first_socket.conversation.turns == 3
        old, new = holder(f)

        old.process.send_signal(signal.SIGTERM)  # the redeploy
        ended = await client.wait_closed()
        assert (ended.code, ended.last_event["sessionEnd"]["reason"]) == (1001, "shutdown")
        stats = ended.last_event["sessionEnd"]["stats"]
        with trio.fail_after(20):
            assert await old.process.wait() == 0

        again, next_resume, left = await open_conversation(f, stack, {"resume": resume})
        assert next_resume != resume
        assert 250 < left < 300  # the time left, not a new session's
        assert "continuing conversation" in new.text
        words = await turn(again, "four")
        second_socket = emulator.connections[-1]
        assert second_socket is not first_socket
        assert second_socket.session_id == first_socket.session_id  # the same conversation
        assert second_socket.resumed_handle == first_socket.issued[-1].handle
        assert second_socket.conversation is not None
        assert second_socket.conversation.turns == 4
        assert words
        used = await sign_in(f, {"resume": resume})  # a resume token works once
        assert (used.status, used.json()["error"]["code"]) == (404, "resume_not_found")

        # The stats went on: the second socket's counts start where the first one's ended.
        new.process.send_signal(signal.SIGTERM)
        last = (await again.wait_closed()).last_event["sessionEnd"]["stats"]
        assert last["message_count"] > stats["message_count"] > 0
        assert last["elapsed_seconds"] > stats["elapsed_seconds"]
        assert last["total_token_count"] > stats["total_token_count"]
        with trio.fail_after(20):
            assert await new.process.wait() == 0


async def test_a_cut_connection_comes_back_within_the_window(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    async with (
        fleet(tmp_path, redis_server, emulator, tls, RESUME_WINDOW_SECONDS=str(WINDOW)) as f,
        AsyncExitStack() as stack,
    ):
        client, resume, _ = await open_conversation(f, stack, {})
        await turn(client, "hello")
        # The browser's network goes: its TCP (TLS) connection closes with no close frame.
        await client.ws._stream.aclose()
        other_origin = await sign_in(f, {"resume": resume}, origin="https://evil.example")
        assert other_origin.status in (403, 404)  # refused either way, and the token kept

        tokens: list[str] = []

        async def back() -> bool:
            answer = await sign_in(f, {"resume": resume})
            if answer.status == 200:
                tokens.append(answer.json()["session_token"])
            else:
                assert answer.json()["error"]["code"] == "resume_not_found"
            return bool(tokens)

        await eventually(back, WINDOW)  # as soon as the instance has noticed the cut
        resumed = BrowserClient(await stack.enter_async_context(f.ws(tokens[0])))
        await resumed.send_json(TEXT_SETUP)
        assert "setupComplete" in await resumed.recv_json()
        await turn(resumed, "still you?")
        last = emulator.connections[-1]
        assert last.session_id == emulator.connections[0].session_id
        assert last.conversation is not None
        assert last.conversation.turns == 2

        # After the window, a resume token is no good.
        await resumed.ws.aclose()
        later, late, _ = await open_conversation(f, stack, {})
        await later.ws.aclose()
        await trio.sleep(WINDOW + 0.5)  # real processes: their clock is the wall clock
        expired = await sign_in(f, {"resume": late})
        assert (expired.status, expired.json()["error"]["code"]) == (404, "resume_not_found")
