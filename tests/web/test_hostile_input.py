"""Hostile input on real sockets (Hypercorn on port 0): each gets its own connection closed only."""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.serving.hypercorn_fixes import AppQueue
from liveproxy.web.app import MAX_BODY_BYTES
from liveproxy.web.asgi import ASGIMessage, Receive, Send
from tests.conftest import TEXT_SETUP, Proxy, ProxyFactory
from tests.core.test_session_endings import assert_error
from tests.fuzz.wire import BINARY, PING, PONG, TEXT, encode_frame
from tests.rawws import RawAnswer, open_raw, read_answer, read_head, upgrade
from tests.wsclient import BrowserClient, has_key

LIMIT = 64 * 1024
#: HTTP/2's connection preface, then an empty SETTINGS frame (prior knowledge, RFC 9113 3.3).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def raw_session(proxy: Proxy, *frames: bytes, extra: bytes = b"") -> RawAnswer:
    """Open ``/ws`` with a fresh token by hand, send ``frames``, read until the server closes."""
    token = await proxy.token()
    stream = await open_raw(proxy.port)
    async with stream:
        await upgrade(stream, f"/ws?token={token}", extra=extra)
        with trio.fail_after(10):
            head = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101"), head
        for frame in frames:
            try:
                await stream.send_all(frame)
            except trio.BrokenResourceError:
                break
        with trio.fail_after(10):
            return await read_answer(stream, head)


async def answers_a_text_turn(proxy: Proxy) -> bool:
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "still there?"})
        await client.recv_until(has_key("serverContent", "turnComplete"))
    return True


# -- the two crashes of Hypercorn 0.18.0 -------------------------------------------------------


@pytest.mark.parametrize(
    "early",
    [encode_frame(TEXT, b"hi"), b"Content-Length: 2\r\n\r\nhi"],
    ids=["frame-before-101", "upgrade-with-body"],
)
async def test_data_before_the_101_is_answered_400_and_closed(proxy: Proxy, early: bytes) -> None:
    stream = await open_raw(proxy.port)
    async with stream:
        if early.startswith(b"Content-Length"):
            header = early.split(b"\r\n\r\n")[0] + b"\r\n"
            await upgrade(stream, f"/ws?token={await proxy.token()}", extra=header, early=b"hi")
        else:
            await upgrade(stream, f"/ws?token={await proxy.token()}", early=early)
        with trio.fail_after(5):
            answer = await read_answer(stream)
    assert answer.status == 400
    assert await answers_a_text_turn(proxy)


@pytest.mark.parametrize(("first", "then"), [(TEXT, BINARY), (BINARY, TEXT)])
async def test_a_message_over_the_limit_then_another_type_is_1009_and_the_server_lives(
    make_proxy: ProxyFactory, first: int, then: int
) -> None:
    proxy = await make_proxy(max_message_bytes=LIMIT)
    setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
    answer = await raw_session(
        proxy, setup, encode_frame(first, b"a" * (LIMIT + 10)), encode_frame(then, b"ab")
    )
    assert answer.close_code == 1009
    error = orjson.loads(answer.texts[-1])["error"]
    assert error["code"] == "message_too_big"
    assert await answers_a_text_turn(proxy)


# -- bounds on what a client may send ----------------------------------------------------------


async def test_a_fragmented_message_over_the_limit_is_refused_before_it_is_held(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(max_message_bytes=LIMIT)
    setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
    parts = [encode_frame(BINARY, bytes(LIMIT // 2), fin=False)]
    parts += [encode_frame(0x0, bytes(LIMIT // 2), fin=False) for _ in range(4)]
    answer = await raw_session(proxy, setup, *parts)
    assert answer.close_code == 1009
    assert orjson.loads(answer.texts[-1])["error"]["code"] == "message_too_big"


async def test_a_message_of_exactly_the_limit_is_accepted(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(max_message_bytes=LIMIT)
    async with proxy.session() as client:
        text = orjson.dumps({"type": "text", "text": "x" * (LIMIT - 40)}).decode()
        text += " " * (LIMIT - len(text))
        await client.ws.send_message(text)
        await client.recv_until(has_key("serverContent", "turnComplete"))


async def test_text_that_is_not_utf8_closes_1007(proxy: Proxy) -> None:
    setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
    answer = await raw_session(proxy, setup, encode_frame(TEXT, b"\xff\xfe bad"))
    assert answer.close_code == 1007


@pytest.mark.parametrize(
    "first",
    [
        '{"setup": NaN}',
        '{"setup": {"generation_config": {"temperature": NaN}}}',
        '  {  "setup": ' + "[" * 2000 + "]" * 2000 + "}",
        '{"setup": {"system_instruction": {"parts": [{"text": "secret prompt"}]}',
    ],
    ids=["nan", "nan-inside", "too-deep-for-the-parser", "truncated"],
)
async def test_a_first_frame_like_a_setup_but_not_json_is_invalid_setup(
    proxy: Proxy, first: str
) -> None:
    async with proxy.connect() as client:
        await client.ws.send_message(first)
        ended = await client.wait_closed()
    assert_error(ended, "invalid_setup", 1007)
    assert proxy.emulator.connections == []


async def send_deep(client: BrowserClient, message: Any) -> None:
    """Send JSON nested deeper than orjson writes (it stops at 255 levels)."""
    await client.ws.send_message(json.dumps(message))


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


async def test_deeply_nested_tool_parameters_are_invalid_setup(proxy: Proxy) -> None:
    tool = {"function_declarations": [{"name": "f", "parameters": nested(150)}]}
    async with proxy.connect() as client:
        await send_deep(client, {"setup": {"tools": tool}})
        ended = await client.wait_closed()
    assert_error(ended, "invalid_setup", 1007)


async def test_a_deeply_nested_tool_response_is_bad_message_and_the_session_goes_on(
    proxy: Proxy,
) -> None:
    response: Any = "leaf"
    for _ in range(300):
        response = {"r": response}
    async with proxy.session() as client:
        await send_deep(
            client, {"tool_response": {"function_responses": [{"id": "1", "response": response}]}}
        )
        error = await client.recv_json()
        assert error["error"]["code"] == "bad_message"
        await client.send_json({"type": "text", "text": "and now?"})
        await client.recv_until(has_key("serverContent", "turnComplete"))


async def test_a_flood_of_tiny_frames_is_rate_limited_and_a_neighbour_is_unaffected(
    proxy: Proxy,
) -> None:
    async with proxy.session() as neighbour:
        setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
        flood = encode_frame(BINARY, b"\x00\x00") * 5000
        answer = await raw_session(proxy, setup, flood)
        assert answer.close_code == 1008
        error = orjson.loads(answer.texts[-1])["error"]
        assert error["code"] == "rate_limited"
        await neighbour.send_json({"type": "text", "text": "hello"})
        await neighbour.recv_until(has_key("serverContent", "turnComplete"))


async def test_a_stalled_session_has_one_message_queued_and_a_neighbour_goes_on(
    make_proxy: ProxyFactory, nursery: trio.Nursery
) -> None:
    """Upstream reads nothing; the client sends messages of MAX_MESSAGE_BYTES without end.
    Hypercorn queues one of them for the app (not ten) and stops reading the client."""
    # An emulator of its own: a stalled connection outlives its client until the test ends.
    upstream: Emulator = await nursery.start(serve_emulator, EmulatorConfig(speed="fast"))
    proxy = await make_proxy(emulator_=upstream, shutdown_grace_seconds=0)
    message = bytes(proxy.state.config.max_message_bytes)
    queues: list[AppQueue] = []
    app: Any = proxy.app.asgi_app

    async def observed(scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            queues.append(getattr(receive, "__self__"))  # noqa: B009 - Hypercorn's AppQueue.get
        await app(scope, receive, send)

    async def flood(stream: trio.SocketStream) -> None:
        frame = encode_frame(BINARY, message)
        while True:
            await stream.send_all(frame)

    async with proxy.session() as neighbour:
        proxy.app.asgi_app = observed  # type: ignore[method-assign,assignment]
        proxy.emulator.queue_faults(Faults(stall_after=0))
        stream = await open_raw(proxy.port)
        await upgrade(stream, f"/ws?token={await proxy.token()}")
        with trio.fail_after(10):
            answer = await read_head(stream)
            await stream.send_all(encode_frame(TEXT, orjson.dumps(TEXT_SETUP)))
            while b"setupComplete" not in answer:
                answer += await stream.receive_some(65536)
        async with trio.open_nursery() as flooding:
            flooding.start_soon(flood, stream)
            with trio.fail_after(60):
                await trio.testing.wait_all_tasks_blocked(cushion=0.5)  # the flood is stuck
            [queue] = queues
            assert queue.queued_bytes == sys.getsizeof(message)
            await neighbour.send_json({"type": "text", "text": "hello"})
            await neighbour.recv_until(has_key("serverContent", "turnComplete"))
            flooding.cancel_scope.cancel()
    proxy.stop.set()  # the stalled session ends, and its connection closes
    with trio.fail_after(10):
        await read_answer(stream)
    await stream.aclose()


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(0x0, b"", fin=False),  # an empty continuation frame: no bytes at all
        encode_frame(PING, b""),
        encode_frame(PONG, b"unsolicited"),
    ],
    ids=["empty-continuation", "ping", "unsolicited-pong"],
)
async def test_every_frame_counts_against_the_rate(proxy: Proxy, frame: bytes) -> None:
    async with proxy.session() as neighbour:
        setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
        opening = encode_frame(BINARY, b"\x00\x00", fin=False)
        answer = await raw_session(proxy, setup, opening + frame * 5000)
        assert answer.close_code == 1008
        assert orjson.loads(answer.texts[-1])["error"]["code"] == "rate_limited"
        pongs = [payload for opcode, payload in answer.frames if opcode == PONG]
        assert len(pongs) < 1000  # of 5000: those past the rate went unanswered
        await neighbour.send_json({"type": "text", "text": "hello"})
        await neighbour.recv_until(has_key("serverContent", "turnComplete"))


async def test_a_text_message_is_bounded_by_the_memory_it_takes(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(max_message_bytes=LIMIT)
    setup = encode_frame(TEXT, orjson.dumps(TEXT_SETUP))
    # 20 K characters, 20 KB of UTF-8: but with one emoji each takes 4 bytes in memory.
    wide = orjson.dumps({"type": "text", "text": "x" * 20_000 + "\U0001f600"})
    answer = await raw_session(proxy, setup, encode_frame(TEXT, wide))
    assert answer.close_code == 1009
    assert orjson.loads(answer.texts[-1])["error"]["code"] == "message_too_big"
    async with proxy.session() as client:  # the same length in plain text is fine
        await client.send_json({"type": "text", "text": "x" * 20_000})
        await client.recv_until(has_key("serverContent", "turnComplete"))


async def test_http2_prior_knowledge_is_refused_505(proxy: Proxy) -> None:
    stream = await open_raw(proxy.port)
    async with stream:
        await stream.send_all(H2_PREFACE + H2_SETTINGS)
        with trio.fail_after(5):
            answer = await read_answer(stream)
    assert answer.head.startswith(b"HTTP/1.1 505"), answer.head
    assert await answers_a_text_turn(proxy)


async def test_an_h2c_upgrade_is_answered_in_http1(proxy: Proxy) -> None:
    stream = await open_raw(proxy.port)
    async with stream:
        await stream.send_all(
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        with trio.fail_after(5):
            head = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"upgrade" not in head.lower()


async def test_real_time_audio_is_far_below_the_message_rate(proxy: Proxy) -> None:
    async with proxy.session() as client:
        for _ in range(100):  # 2 s of 20 ms frames, sent as fast as the socket takes them
            await client.ws.send_message(bytes(640))
        await client.send_json({"type": "text", "text": "hello"})
        await client.recv_until(has_key("serverContent", "turnComplete"))


# -- HTTP bodies -------------------------------------------------------------------------------


async def post_raw(proxy: Proxy, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request, read its answer, then send a second request on the same connection.

    Returns everything read; the server must answer the second or close at once.
    """
    stream = await open_raw(proxy.port)
    async with stream:
        await stream.send_all(head)
        for chunk in body_chunks:
            try:
                await stream.send_all(chunk)
            except trio.BrokenResourceError:
                break
        data = b""
        with trio.fail_after(5):  # answered or closed at once: never left hanging
            while b"}}" not in data:
                chunk = await _receive(stream)
                if not chunk:
                    return data
                data += chunk
            try:
                await stream.send_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            except trio.BrokenResourceError:
                return data
            while chunk := await _receive(stream):
                data += chunk
        return data


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 16 * 1024 * 1024])
async def test_an_auth_body_over_20_kib_is_413_and_the_connection_closes(
    proxy: Proxy, size: int
) -> None:
    head = b"POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    data = await post_raw(proxy, head, [b"x" * min(size, 65536)])
    assert data.startswith(b"HTTP/1.1 413")
    assert b'"code":"payload_too_large"' in data
    assert b"connection: close" in data.lower()
    assert data.count(b"HTTP/1.1") == 1


async def test_a_chunked_auth_body_over_20_kib_is_413(proxy: Proxy) -> None:
    head = b"POST /api/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (1024, b" " * 1024)
    data = await post_raw(proxy, head, [chunk] * 24)
    assert data.startswith(b"HTTP/1.1 413")


async def test_an_auth_body_of_exactly_20_kib_is_read(proxy: Proxy) -> None:
    body = b'{"session_duration": 90}'
    body += b" " * (MAX_BODY_BYTES - len(body))
    response = await proxy.http("POST", "/api/auth", body)
    assert response.status == 200
    assert response.json()["session_time_limit"] == 90


@pytest.mark.parametrize("path", ["/api/auth", "/api/health", "/no/such/path"])
async def test_a_body_that_stops_arriving_is_408_and_the_connection_closes(
    make_proxy: ProxyFactory, path: str
) -> None:
    proxy = await make_proxy(request_body_timeout_seconds=0.5)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{" % path.encode()
    data = await post_raw(proxy, head, [])
    assert data.startswith(b"HTTP/1.1 408")
    assert b'"code":"request_timeout"' in data
    assert data.count(b"HTTP/1.1") == 1  # closed: the second request got no answer


async def test_a_body_over_20_kib_is_413_on_any_path(proxy: Proxy) -> None:
    size = MAX_BODY_BYTES + 1
    head = b"POST /no/such/path HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
    data = await post_raw(proxy, head, [b" " * size])
    assert data.startswith(b"HTTP/1.1 413")


# -- permessage-deflate ------------------------------------------------------------------------

DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


async def accepted_extensions(proxy: Proxy) -> bytes:
    stream = await open_raw(proxy.port)
    async with stream:
        await upgrade(stream, f"/ws?token={await proxy.token()}", extra=DEFLATE_OFFER)
        with trio.fail_after(5):
            head = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 101")
    lines = [line for line in head.lower().split(b"\r\n") if b"sec-websocket-extensions" in line]
    return b"".join(lines)


async def test_a_deflate_offer_gets_no_extension_by_default(proxy: Proxy) -> None:
    assert await accepted_extensions(proxy) == b""


async def test_ws_compression_accepts_the_offer(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(ws_compression=True)
    assert b"permessage-deflate" in await accepted_extensions(proxy)
