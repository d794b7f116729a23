"""Raw WebSocket bytes over a trio TCP stream: for tests that must send what a library refuses to.

Frames are built with :func:`tests.fuzz.wire.encode_frame`; this module reads the server's
answer (the HTTP head, then unmasked frames) until the server closes.
"""

from __future__ import annotations

import struct

import attrs
import trio

from tests.fuzz.wire import upgrade_request

CLOSE = 0x8


@attrs.define
class RawAnswer:
    """What the server sent on one raw connection before it closed it."""

    status: int
    head: bytes
    frames: list[tuple[int, bytes]]

    @property
    def close_code(self) -> int | None:
        for opcode, payload in self.frames:
            if opcode == CLOSE and len(payload) >= 2:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
        return None

    @property
    def texts(self) -> list[str]:
        return [p.decode() for op, p in self.frames if op == 0x1]


async def open_raw(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def upgrade(
    stream: trio.SocketStream, path: str, *, extra: bytes = b"", early: bytes = b""
) -> None:
    """Send an upgrade request for ``path`` (``extra`` header lines may be added).

    ``early`` goes in the same write, so it reaches the server before its answer can.
    """
    request = upgrade_request(path, "127.0.0.1")
    await stream.send_all(request[:-2] + extra + b"\r\n" + early)


async def read_head(stream: trio.SocketStream) -> bytes:
    """Read the server's HTTP answer head (and whatever came with it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


async def read_answer(stream: trio.SocketStream, data: bytes = b"") -> RawAnswer:
    """Read until the server closes the connection (EOF or reset): its head and frames.

    ``data`` is what was already read of the answer.
    """
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return RawAnswer(status, head, _frames(rest) if status == 101 else [])


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    while len(data) >= 2:
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames
