"""One accepted WebSocket as the emulator uses it; trio-websocket's errors become endings here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from liveproxy.emulator.endings import PeerGone
from liveproxy.protocol.closes import ABNORMAL, TOO_BIG, truncate_reason

if TYPE_CHECKING:
    from liveproxy.emulator.gate import GatedStream
    from liveproxy.emulator.messages import Message
    from liveproxy.emulator.record import ConnectionRecord

#: How long a server-initiated close waits for the client's close frame (trio time).
CLOSE_TIMEOUT = 5.0
MALFORMED_FRAME = "}{ this frame is not JSON"


def _gone(exc: ConnectionClosed) -> PeerGone:
    reason = exc.reason
    if reason is None or reason.code == ABNORMAL:
        return PeerGone(ABNORMAL, None, "dropped")
    if reason.code == TOO_BIG:
        return PeerGone(TOO_BIG, reason.reason, "server")
    return PeerGone(reason.code, reason.reason, "client")


class Transport:
    """Sends server messages (recording them) and receives client frames.

    trio-websocket serialises writes with its own lock, so several tasks may send at once.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: GatedStream,
        record: ConnectionRecord,
        *,
        binary: bool,
        keep: bool,
    ) -> None:
        self._ws = ws
        self._stream = stream
        self._record = record
        self._binary = binary
        self._keep = keep

    @property
    def stalled(self) -> bool:
        return self._stream.stalled

    def stall(self) -> None:
        """Stop reading and writing (the stall fault)."""
        self._stream.stall()

    async def receive(self) -> str | bytes:
        """The next client frame's payload.

        Raises:
            PeerGone: the WebSocket is closed.
        """
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _gone(exc) from None

    async def send(self, message: Message, *, keep: bool = True) -> None:
        """Send one message as a binary (or text) frame of JSON; ``keep=False`` only counts it.

        Raises:
            PeerGone: the WebSocket is closed.
        """
        self._record.sent_count += 1
        if keep and self._keep:
            self._record.sent.append(message)
        data = orjson.dumps(message)
        await self._send_frame(data if self._binary else data.decode())

    async def send_malformed(self) -> None:
        """Send one frame that is not JSON (the malformed fault).

        Raises:
            PeerGone: the WebSocket is closed.
        """
        payload = MALFORMED_FRAME
        await self._send_frame(payload.encode() if self._binary else payload)

    async def _send_frame(self, frame: str | bytes) -> None:
        try:
            await self._ws.send_message(frame)
        except ConnectionClosed as exc:
            raise _gone(exc) from None

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame and wait (bounded) for the client's; the stream ends closed."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._ws.aclose(code, truncate_reason(reason))

    async def drop(self) -> None:
        """Close the TCP stream without a close frame."""
        await self._stream.drop()
