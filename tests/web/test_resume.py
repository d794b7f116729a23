"""Conversations that outlive a socket, in one process: the token, the window, the bindings.

The same Gemini session continues (the emulator's conversation id and the handle it issued);
the time left and the stats carry over. Across instances and through nginx: tests/deploy.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.fuzz.wire import TEXT, encode_frame
from tests.http import HttpResponse, request
from tests.rawws import open_raw, read_head, upgrade
from tests.served import eventually
from tests.wsclient import BrowserClient, has_key, wait_until

ORIGIN = "http://127.0.0.1:5173"
HEADERS = [(b"Origin", ORIGIN.encode())]


async def auth(
    proxy: Proxy, body: dict[str, Any] | None = None, origin: str = ORIGIN
) -> HttpResponse:
    return await request(
        "127.0.0.1",
        proxy.port,
        "POST",
        "/api/auth",
        orjson.dumps(body) if body is not None else None,
        {"Origin": origin, "Content-Type": "application/json"},
    )


async def start(proxy: Proxy, token: str, ws: Any, window: int = 60) -> tuple[BrowserClient, str]:
    """Send the app's usual setup; the setupComplete and the resume token that follow."""
    client = BrowserClient(ws)
    await client.send_json(TEXT_SETUP)
    assert "setupComplete" in await client.recv_json()
    resumable = (await client.recv_until(has_key("sessionResumable")))[-1]
    assert isinstance(resumable, str)
    announced = orjson.loads(resumable)["sessionResumable"]
    assert announced["expiresIn"] == window
    return client, announced["token"]


async def talk(client: BrowserClient, text: str) -> list[str]:
    await client.send_json({"type": "text", "text": text})
    frames = await client.recv_until(has_key("serverContent", "turnComplete"))
    return [f for f in frames if isinstance(f, str)]


def ws_url(proxy: Proxy, token: str) -> str:
    return f"ws://127.0.0.1:{proxy.port}/ws?token={token}"


async def test_a_closed_socket_resumes_the_same_conversation(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    proxy = await make_proxy()
    first = await auth(proxy, {"session_duration": 120})
    assert first.status == 200
    token = first.json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, resume = await start(proxy, token, ws)
        await talk(client, "one")
        await talk(client, "two")
    await emulator.wait_for_connections(1)
    before = emulator.connections[0]
    await before.wait_closed()

    again = await auth(proxy, {"resume": resume})
    assert again.status == 200, again.body
    assert again.json()["session_time_limit"] <= 120
    token = again.json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, second_resume = await start(proxy, token, ws)
        assert second_resume != resume  # rotated: a new one for this socket
        await talk(client, "three")
        await client.send_json({"type": "text", "text": "end"})
        stats_source = await client.recv_until(has_key("serverContent", "turnComplete"))
    after = emulator.connections[-1]
    assert after.session_id == before.session_id  # the same Gemini conversation
    issued = [
        m["sessionResumptionUpdate"]["newHandle"]
        for m in before.sent
        if "sessionResumptionUpdate" in m and m["sessionResumptionUpdate"].get("newHandle")
    ]
    assert after.resumed_handle == issued[-1]  # with the latest handle Gemini gave
    assert stats_source


async def test_a_resume_token_is_single_use_and_bound_to_its_origin(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy()
    token = (await auth(proxy)).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, resume = await start(proxy, token, ws)
        await talk(client, "hello")
    await trio.sleep(0.2)  # the socket's end is stored when its session is over
    other = await auth(proxy, {"resume": resume}, origin="http://localhost:3000")
    assert other.status == 404
    assert other.json()["error"]["code"] == "resume_not_found"
    assert (await auth(proxy, {"resume": resume})).status == 200  # still there for its page
    used = await auth(proxy, {"resume": resume})
    assert (used.status, used.json()["error"]["code"]) == (404, "resume_not_found")
    assert (await auth(proxy, {"resume": "x" * 43})).status == 404
    for bad_token in (42, "", "x" * 257, ["a"]):
        bad = await auth(proxy, {"resume": bad_token})
        assert (bad.status, bad.json()["error"]["code"]) == (400, "bad_request"), bad_token


async def test_the_resume_window_closes(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(resume_window_seconds=20)
    token = (await auth(proxy)).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        resume = orjson.loads((await client.recv_until(has_key("sessionResumable")))[-1])
        assert resume["sessionResumable"]["expiresIn"] == 20
    await trio.sleep(21)
    late = await auth(proxy, {"resume": resume["sessionResumable"]["token"]})
    assert late.status == 404


async def test_time_limit_and_error_endings_are_not_resumable(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(session_min_seconds=1)
    token = (await auth(proxy, {"session_duration": 1})).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        frames = await client.recv_until(has_key("sessionResumable"))
        resume = orjson.loads(frames[-1])["sessionResumable"]["token"]
        ended = await client.wait_closed()
    assert ended.last_event["sessionEnd"]["reason"] == "time_limit"
    assert (await auth(proxy, {"resume": resume})).status == 404


async def test_without_a_window_nothing_is_announced(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(resume_window_seconds=0)
    async with proxy.session() as client:
        frames = await talk(client, "hi")
    assert not any("sessionResumable" in f for f in frames)


async def test_a_connection_cut_without_a_close_frame_is_resumable(
    make_proxy: ProxyFactory, emulator: Emulator
) -> None:
    proxy = await make_proxy()
    token = (await auth(proxy)).json()["session_token"]
    stream = await open_raw(proxy.port)
    await upgrade(stream, f"/ws?token={token}", extra=f"Origin: {ORIGIN}\r\n".encode())
    seen = await read_head(stream)
    await stream.send_all(encode_frame(TEXT, orjson.dumps(TEXT_SETUP)))
    with trio.fail_after(5):
        while b"sessionResumable" not in seen:
            seen += await stream.receive_some(65536)
    resume = orjson.loads(seen[seen.index(b'{"sessionResumable"') :].split(b"}}")[0] + b"}}")
    turn = orjson.dumps({"type": "text", "text": "before the cut"})
    await stream.send_all(encode_frame(TEXT, turn))
    await emulator.wait_for_connections(1)
    await wait_until(lambda: bool(emulator.connections[0].issued))  # Gemini sent a handle
    with trio.fail_after(5):
        while b"turnComplete" not in seen:
            seen += await stream.receive_some(65536)
    await stream.aclose()  # a TCP FIN and no close frame: the browser's network is gone (1006)

    tokens: list[str] = []

    async def resumed() -> bool:
        answer = await auth(proxy, {"resume": resume["sessionResumable"]["token"]})
        tokens.extend([answer.json()["session_token"]] if answer.status == 200 else [])
        return bool(tokens)

    await eventually(resumed, 5)
    async with open_websocket_url(ws_url(proxy, tokens[0]), extra_headers=HEADERS) as ws:
        client, _ = await start(proxy, tokens[0], ws)
        await talk(client, "back again")
    assert emulator.connections[-1].session_id == emulator.connections[0].session_id


async def test_shutdown_waits_for_sockets_whose_conversation_is_still_being_stored(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    """A session is over before its conversation is stored and its last frames are sent: the
    drain must wait for the socket, or the browser loses its sessionEnd and close frame."""
    proxy = await make_proxy(shutdown_grace_seconds=0)
    store = proxy.state.store
    keep = store.keep_conversation

    async def slow_keep(*args: Any) -> None:  # a store two seconds away (fault injection)
        await trio.sleep(2)
        await keep(*args)

    store.keep_conversation = slow_keep  # type: ignore[method-assign,assignment]
    async with proxy.session() as client:
        await talk(client, "hello")
        proxy.stop.set()
        ended = await client.wait_closed()
    assert (ended.code, ended.last_event["sessionEnd"]["reason"]) == (1001, "shutdown")


async def test_a_resume_refused_for_capacity_stays_resumable(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(max_sessions=2, token_ttl_seconds=30)
    token = (await auth(proxy)).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, resume = await start(proxy, token, ws)
        await talk(client, "hello")
    await trio.sleep(1)
    await proxy.token()
    await proxy.token()  # the two places are taken by unused tokens
    full = await auth(proxy, {"resume": resume})
    assert (full.status, full.json()["error"]["code"]) == (503, "at_capacity")
    await trio.sleep(31)  # the tokens expire; the conversation's window (60 s) has not
    assert (await auth(proxy, {"resume": resume})).status == 200


async def test_refused_resumes_never_extend_the_window(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(max_sessions=1, token_ttl_seconds=30, resume_window_seconds=20)
    token = (await auth(proxy)).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, resume = await start(proxy, token, ws, window=20)
        await talk(client, "hello")
    await wait_until(lambda: proxy.state.gauges.live_sessions == 0)
    await trio.sleep(1)
    await proxy.token()  # the one place is taken by an unused token for 30 s
    for _ in range(18):  # a refusal a second: each takes the conversation and puts it back
        full = await auth(proxy, {"resume": resume})
        assert full.json()["error"]["code"] == "at_capacity"
        await trio.sleep(1)
    await trio.sleep(12)  # the token has expired; so has the conversation's own window
    late = await auth(proxy, {"resume": resume})
    assert (late.status, late.json()["error"]["code"]) == (404, "resume_not_found")


async def test_guessing_resume_tokens_is_rate_limited_and_leaves_the_conversation(
    make_proxy: ProxyFactory, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(auth_rate_limit=(3, 60.0))
    token = (await auth(proxy)).json()["session_token"]
    async with open_websocket_url(ws_url(proxy, token), extra_headers=HEADERS) as ws:
        client, resume = await start(proxy, token, ws)
        await talk(client, "hello")
    guesses = [await auth(proxy, {"resume": f"guess-{n}"}) for n in range(3)]
    assert [g.status for g in guesses] == [404, 404, 429]  # the sign-in above took one
    limited = guesses[-1]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # A resume refused by the rate limit does not touch the conversation: it is still there.
    assert (await auth(proxy, {"resume": resume})).status == 429
    await trio.sleep(21)  # one sign-in back in the bucket
    assert (await auth(proxy, {"resume": resume})).status == 200
