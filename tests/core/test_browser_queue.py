"""BrowserQueue: the byte-bounded queue toward one browser."""

from __future__ import annotations

from typing import Any

import pytest

from liveproxy.contract.errors import SlowClient
from liveproxy.core.browser import BrowserQueue, BrowserSocket


class RecordingSend:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(dict(message))


async def nothing() -> dict[str, Any]:
    raise AssertionError("not used")


def socket_and_log() -> tuple[BrowserSocket, RecordingSend]:
    send = RecordingSend()
    return BrowserSocket({"type": "websocket"}, nothing, send, max_message_bytes=1024), send


def test_a_put_past_the_bound_is_a_slow_client() -> None:
    queue = BrowserQueue(max_bytes=10)
    queue.put(b"12345678")
    with pytest.raises(SlowClient, match="8 bytes waiting"):
        queue.put(b"123")
    assert queue.queued_bytes == 8


def test_one_frame_larger_than_the_bound_still_goes_when_nothing_waits() -> None:
    queue = BrowserQueue(max_bytes=10)
    queue.put(b"x" * 50)
    assert queue.queued_bytes == 50


def test_drop_audio_keeps_the_json_events() -> None:
    queue = BrowserQueue(max_bytes=1000)
    for frame in (b"aa", "e1", b"bbbb", "e2"):
        queue.put(frame)
    assert queue.drop_audio() == 6
    assert queue.queued_bytes == 4


async def test_the_writer_sends_in_order_then_the_last_message_and_the_close() -> None:
    queue = BrowserQueue(max_bytes=1000)
    socket, sent = socket_and_log()
    queue.put(b"pcm")
    queue.put('{"event":1}')
    queue.finish('{"sessionEnd":{}}', 1000, "time_limit")
    await queue.run_writer(socket)
    assert sent.messages == [
        {"type": "websocket.send", "bytes": b"pcm"},
        {"type": "websocket.send", "text": '{"event":1}'},
        {"type": "websocket.send", "text": '{"sessionEnd":{}}'},
        {"type": "websocket.close", "code": 1000, "reason": "time_limit"},
    ]


async def test_finish_with_drop_discards_what_a_slow_browser_did_not_read() -> None:
    queue = BrowserQueue(max_bytes=1000)
    socket, sent = socket_and_log()
    queue.put(b"stale")
    queue.finish('{"error":{}}', 1008, "slow_client", drop=True)
    await queue.run_writer(socket)
    assert [m.get("text", m.get("code")) for m in sent.messages] == ['{"error":{}}', 1008]
