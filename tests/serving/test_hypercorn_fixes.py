"""The Hypercorn fixes one by one: sync unit tests, and the per-connection net on a real server."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.protocol.h11
import hypercorn.trio
import pytest
import trio
import trio.testing
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.events import BytesMessage, TextMessage

from liveproxy.serving import hypercorn_fixes
from liveproxy.serving.hypercorn_fixes import AppQueue, BoundedMessageBuffer, message_bytes
from tests.fuzz.wire import TEXT, encode_frame
from tests.http import request
from tests.rawws import open_raw, read_answer, upgrade


def test_the_buffer_refuses_before_it_grows_past_the_limit_and_is_empty_after() -> None:
    buffer = BoundedMessageBuffer(10)
    buffer.extend(BytesMessage(data=b"12345678", message_finished=False))
    with pytest.raises(FrameTooLargeError):
        buffer.extend(BytesMessage(data=b"abc", message_finished=True))
    assert (buffer.value, buffer.length) == (None, 0)
    buffer.extend(TextMessage(data="ok", message_finished=True))  # the other type, afterwards
    assert buffer.to_message()["text"] == "ok"


def test_the_buffer_counts_text_in_utf8_bytes() -> None:
    buffer = BoundedMessageBuffer(8)
    buffer.extend(TextMessage(data="éé", message_finished=False))  # 4 bytes, 2 characters
    assert buffer.length == 4
    with pytest.raises(FrameTooLargeError):
        buffer.extend(TextMessage(data="ééé", message_finished=True))


def receive(data: bytes) -> Any:
    return {"type": "websocket.receive", "bytes": data, "text": None}


async def test_the_app_queue_holds_messages_up_to_its_bytes_unless_one_alone_is_larger() -> None:
    queue = AppQueue(max_events=10, max_bytes=100)
    first, second = receive(bytes(60)), receive(bytes(60))
    await queue.put(first)
    await queue.put({"type": "websocket.disconnect", "code": 1000})  # counted only as an event
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.put, second)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.queued_bytes == message_bytes(first)  # the second waits for room
        assert await queue.get() is first
    assert queue.queued_bytes == message_bytes(second)
    assert (await queue.get())["type"] == "websocket.disconnect"
    assert await queue.get() is second
    large = receive(bytes(500))
    await queue.put(large)  # alone in the queue
    assert queue.queued_bytes == message_bytes(large)


async def test_a_put_waiting_for_room_is_dropped_when_cancelled_or_when_the_app_returns() -> None:
    queue = AppQueue(max_events=10, max_bytes=100)
    await queue.put(receive(bytes(60)))
    with trio.move_on_after(0.01):
        await queue.put(receive(bytes(60)))
    assert queue.queued_bytes == message_bytes(receive(bytes(60)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.put, receive(bytes(60)))
        await trio.testing.wait_all_tasks_blocked()
        queue.close()  # the waiting put returns: the nursery can exit
    await queue.put(receive(b"later"))  # dropped at once
    with pytest.raises(trio.ClosedResourceError):
        await queue.get()


async def asgi_echo(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"alive"})


async def test_the_net_closes_a_failing_connection_and_the_server_goes_on(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the net: Hypercorn's own WebSocket stream still raises on data before the 101."""
    hypercorn_fixes.install()
    monkeypatch.setattr(hypercorn.protocol.h11, "WSStream", WSStream)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    binds = await nursery.start(
        partial(hypercorn.trio.serve, asgi_echo, config, shutdown_trigger=stop.wait)
    )
    port = int(binds[0].rsplit(":", 1)[1])
    with caplog.at_level(logging.ERROR, "liveproxy.connections"):
        for _ in range(3):
            stream = await open_raw(port)
            async with stream:
                await upgrade(stream, "/ws", early=encode_frame(TEXT, b"hi"))
                with trio.fail_after(5):
                    await read_answer(stream)
        response = await request("127.0.0.1", port, "GET", "/")
    assert response.body == b"alive"
    failures = [r.getMessage() for r in caplog.records if r.name == "liveproxy.connections"]
    assert (
        failures == ["a client connection failed and was closed: h11._util.LocalProtocolError"] * 3
    )
    stop.set()
