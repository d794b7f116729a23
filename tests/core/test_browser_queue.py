"""BrowserQueue: the queue toward one browser, bounded by the memory its frames take."""

from __future__ import annotations

from typing import Any

import pytest

from liveproxy.contract.errors import SlowClient
from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.footprint import footprint
from liveproxy.web.browser_socket import BrowserSocket


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
    held = footprint(b"12345678")
    queue = BrowserQueue(max_bytes=held + 2)
    queue.put(b"12345678")
    with pytest.raises(SlowClient, match=f"{held} bytes waiting"):
        queue.put(b"123")
    assert queue.queued_bytes == held


def test_one_frame_larger_than_the_bound_still_goes_when_nothing_waits() -> None:
    queue = BrowserQueue(max_bytes=10)
    queue.put(b"x" * 50)
    assert queue.queued_bytes == footprint(b"x" * 50)


def test_text_is_counted_by_the_memory_it_takes() -> None:
    text = "x" * 1000 + "\U0001f600"  # one emoji: every character takes 4 bytes
    assert footprint(text) > 4 * 1000
    queue = BrowserQueue(max_bytes=3000)
    queue.put("x" * 1000)
    queue.drop_audio()
    with pytest.raises(SlowClient):
        queue.put(text)


def test_drop_audio_keeps_the_json_events() -> None:
    queue = BrowserQueue(max_bytes=1000)
    for frame in (b"aa", "e1", b"bbbb", "e2"):
        queue.put(frame)
    assert queue.drop_audio() == footprint(b"aa") + footprint(b"bbbb")
    assert queue.queued_bytes == footprint("e1") + footprint("e2")


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
