"""A lean RFC 6455 WebSocket client for the load generator.

Why not trio-websocket: its per-connection reader task, message channel, send lock, wsproto state
machine and a trio checkpoint on every send cost the generator about twice the CPU per frame, and
the generator shares the two cores with the proxy and the emulator. This client drives a
non-blocking socket itself and uses trio only to wait (``wait_readable`` / ``wait_writable``):

- :meth:`WebSocket.send_nowait` writes a frame at once, as a browser's ``send()`` does: what the
  socket does not take now is buffered (a browser's ``bufferedAmount``) and written by
  :meth:`WebSocket.flush`, which the caller runs as a task when told to;
- :meth:`WebSocket.receive` parses frames inline, so a session needs one receiving task and no
  reader task or channel.

What it does: the HTTP/1.1 upgrade (``Sec-WebSocket-Accept`` checked), masked client frames with a
fresh key per frame (the server pays the unmasking a browser makes it pay), unmasked server frames
of any length, fragmented messages, the close handshake, and permessage-deflate (RFC 7692): by
default it offers the extension exactly as Chrome does (:data:`CHROME_DEFLATE_OFFER`), and when
the server accepts, every data message is compressed and inflated with wsproto's
:class:`~wsproto.extensions.PerMessageDeflate`, the same code Hypercorn runs on the other side.
What it does not: TLS, answering pings (counted; neither liveproxy nor the emulator sends them).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import socket
import struct
from typing import Any, NoReturn, Protocol

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_RECEIVE_BYTES = 65536
_MAX_HEAD_BYTES = 16384

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")

#: What Chrome (and every Chromium browser) sends on each WebSocket upgrade.
CHROME_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_RSV1 = 0x40
#: wsproto's extension hooks ask which side they run on; they read nothing else of it.
_CLIENT_SIDE = FrameProtocol(client=True, extensions=[])
_NO_RSV = RsvBits(False, False, False)
_DATA_OPCODES = {
    OP_CONTINUATION: Opcode.CONTINUATION,
    OP_TEXT: Opcode.TEXT,
    OP_BINARY: Opcode.BINARY,
}


class Connection(Protocol):
    """What the load generator needs of a WebSocket."""

    async def send(self, message: bytes | str) -> None: ...

    async def receive(self) -> bytes | str: ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...

    @property
    def extensions(self) -> str | None:
        """The server's ``Sec-WebSocket-Extensions`` answer (None: it accepted none)."""
        ...


class HandshakeFailed(Exception):
    """The server did not upgrade the connection (the message names its status line)."""


class Closed(Exception):
    """The WebSocket is closed; ``code`` and ``reason`` are the peer's (1006: no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


def _mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 §5.3), via big-int arithmetic."""
    size = len(payload)
    if not size:
        return payload
    keys = (key * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")
    return masked.to_bytes(size, "little")


def encode_frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """One final, masked client frame (``rsv1``: its payload is deflated, RFC 7692)."""
    size = len(payload)
    first = 0x80 | opcode | (_RSV1 if rsv1 else 0)
    if size < 126:
        head = _SHORT.pack(first, 0x80 | size)
    elif size < 65536:
        head = _MEDIUM.pack(first, 0x80 | 126, size)
    else:
        head = _LONG.pack(first, 0x80 | 127, size)
    # The key only has to be unpredictable to a browser's network neighbours; any non-constant
    # value makes the server do the same unmasking work.
    key = random.getrandbits(32).to_bytes(4, "little")
    return head + key + _mask(payload, key)


class ChromeDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, offering what Chrome offers (:data:`CHROME_DEFLATE_OFFER`):
    wsproto's own offer names both window sizes, Chrome's only ``client_max_window_bits``."""

    def offer(self) -> str:
        return CHROME_DEFLATE_OFFER.partition("; ")[2]


def chrome_deflate() -> PerMessageDeflate:
    """A fresh :class:`ChromeDeflate` (one per connection: it holds the zlib contexts)."""
    return ChromeDeflate()


def accept_extensions(answer: str | None, offered: bool) -> PerMessageDeflate | None:
    """The extension the server's ``Sec-WebSocket-Extensions`` ``answer`` agreed to (None when
    it accepted none).

    Raises:
        HandshakeFailed: it names an extension that was not offered, or parameters this client
            cannot honour (a browser fails the connection then, too).
    """
    if not answer:
        return None
    name, _, _params = answer.partition(";")
    if not offered or name.strip().lower() != PerMessageDeflate.name or "," in answer:
        raise HandshakeFailed(f"unexpected Sec-WebSocket-Extensions: {answer!r}")
    deflate = chrome_deflate()
    try:
        deflate.finalize(answer)
    except ValueError:
        raise HandshakeFailed(f"bad permessage-deflate parameters: {answer!r}") from None
    return deflate


class WebSocket:
    """One client WebSocket over a connected non-blocking socket (see :func:`connect`).

    One task may call :meth:`receive` while others send; sends are not interleaved within a
    frame because :meth:`send_nowait` never waits and :meth:`flush` is the only writer of the
    buffered rest.
    """

    def __init__(
        self,
        sock: socket.socket,
        leftover: bytes,
        deflate: PerMessageDeflate | None = None,
        extensions: str | None = None,
    ) -> None:
        self._sock = sock
        self._deflate = deflate
        self._extensions = extensions
        self._buffer = bytearray(leftover)
        self._pending = bytearray()
        self._flushing = False
        self._flushed = trio.Event()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._close_sent = False
        self._reading = False
        self._closed = trio.Event()
        self._released = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.pings = 0

    @property
    def extensions(self) -> str | None:
        return self._extensions

    # -- sending ------------------------------------------------------------------------------

    def send_nowait(self, message: bytes | str) -> bool:
        """Write ``message`` as one binary (bytes) or text (str) frame without waiting.

        Returns True when part of it had to be buffered and no flush is running: the caller
        must then run :meth:`flush` (as a task) to write it.

        Raises:
            Closed: the connection is closed or broken.
        """
        if self._close_sent or self.close_code is not None:
            raise Closed(self.close_code or 1006, self.close_reason)
        return self._write(self._encode(message))

    def _encode(self, message: bytes | str) -> bytes:
        if isinstance(message, str):
            opcode, payload = OP_TEXT, message.encode()
        else:
            opcode, payload = OP_BINARY, message
        deflate = self._deflate
        if deflate is None:
            return encode_frame(opcode, payload)
        rsv, data = deflate.frame_outbound(
            _CLIENT_SIDE, _DATA_OPCODES[opcode], _NO_RSV, payload, True
        )
        return encode_frame(opcode, data, rsv.rsv1)

    def _write(self, frame: bytes) -> bool:
        """Write ``frame`` or buffer (the rest of) it; True when a flush must now be run."""
        if self._pending:
            self._pending += frame
        else:
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                raise Closed(1006, "connection lost") from None
            if sent == len(frame):
                return False
            self._pending += frame[sent:]
        if self._flushing:
            return False
        self._flushing = True
        self._flushed = trio.Event()
        return True

    async def flush(self) -> None:
        """Write the buffered rest as the socket takes it (run once per True from
        :meth:`send_nowait`)."""
        try:
            while self._pending:
                await trio.lowlevel.wait_writable(self._sock)
                try:
                    sent = self._sock.send(self._pending)
                except BlockingIOError:
                    continue
                except OSError:
                    self._pending.clear()
                    return
                del self._pending[:sent]
        except trio.ClosedResourceError:
            self._pending.clear()
        finally:
            self._flushing = False
            self._flushed.set()

    async def send(self, message: bytes | str) -> None:
        """Send ``message`` and wait until the socket has taken all of it.

        Raises:
            Closed: the connection is closed or broken.
        """
        if self.send_nowait(message):
            await self.flush()
        elif self._flushing:
            await self._flushed.wait()

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> bytes | str:
        """The next message: bytes for binary, str for text.

        Raises:
            Closed: the peer closed (its code and reason), or the connection broke (1006).
        """
        self._reading = True
        try:
            while True:
                message = self._parse()
                if message is not None:
                    return message
                try:
                    await trio.lowlevel.wait_readable(self._sock)
                    data = self._sock.recv(_RECEIVE_BYTES)
                except BlockingIOError:
                    continue
                except (OSError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self._gone(1006, "connection lost")
                self._buffer += data
        finally:
            self._reading = False

    def _gone(self, code: int, reason: str) -> NoReturn:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._closed.set()
        raise Closed(self.close_code, self.close_reason)

    def _parse(self) -> bytes | str | None:
        """Take complete frames off the buffer until one completes a data message."""
        buffer = self._buffer
        while True:
            available = len(buffer)
            if available < 2:
                return None
            first, second = buffer[0], buffer[1]
            if second & 0x80:
                self._gone(1002, "masked server frame")
            size = second & 0x7F
            start = 2
            if size == 126:
                if available < 4:
                    return None
                size = int.from_bytes(buffer[2:4], "big")
                start = 4
            elif size == 127:
                if available < 10:
                    return None
                size = int.from_bytes(buffer[2:10], "big")
                start = 10
            end = start + size
            if available < end:
                return None
            payload = bytes(buffer[start:end])
            del buffer[:end]
            opcode = first & 0x0F
            final = first & 0x80
            rsv = first & 0x70
            if self._deflate is not None and opcode in _DATA_OPCODES:
                payload = self._inflate(opcode, rsv, size, payload, bool(final))
            elif rsv:
                self._gone(1002, "RSV bits without a negotiated extension")
            if opcode in (OP_BINARY, OP_TEXT):
                if final:
                    return payload if opcode == OP_BINARY else payload.decode()
                self._fragment_opcode, self._fragments = opcode, [payload]
            elif opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                if final:
                    whole = b"".join(self._fragments)
                    self._fragments = []
                    return whole if self._fragment_opcode == OP_BINARY else whole.decode()
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._gone(code, payload[2:].decode(errors="replace"))
            elif opcode == OP_PING:
                self.pings += 1

    def _inflate(self, opcode: int, rsv: int, size: int, payload: bytes, final: bool) -> bytes:
        """A data frame's payload through permessage-deflate (inflated if its message is
        compressed; a message's inflated tail comes with its final frame)."""
        deflate = self._deflate
        assert deflate is not None
        if rsv & ~_RSV1:
            self._gone(1002, "RSV2/RSV3 set")
        header = deflate.frame_inbound_header(
            _CLIENT_SIDE, _DATA_OPCODES[opcode], RsvBits(bool(rsv), False, False), size
        )
        if isinstance(header, CloseReason):
            self._gone(int(header), "bad compressed frame")
        data = deflate.frame_inbound_payload_data(_CLIENT_SIDE, payload)
        if isinstance(data, CloseReason):
            self._gone(int(data), "bad deflate data")
        tail = deflate.frame_inbound_complete(_CLIENT_SIDE, final)
        if isinstance(tail, CloseReason):
            self._gone(int(tail), "bad deflate data")
        return data + tail if tail else data

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (also as the reply to the peer's), wait for the peer's close,
        then release the socket. The caller bounds the wait; the socket is released however
        this ends. Nothing may be sent after this starts."""
        try:
            if not self._close_sent:
                self._close_sent = True
                payload = code.to_bytes(2, "big") + reason.encode()[:123]
                try:
                    if self._write(encode_frame(OP_CLOSE, payload)):
                        await self.flush()
                    elif self._flushing:
                        await self._flushed.wait()
                except Closed:
                    return
            if self._reading:
                await self._closed.wait()
            else:
                while self.close_code is None:
                    try:
                        await self.receive()
                    except Closed:
                        break
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()


async def _open_socket(host: str, port: int) -> socket.socket:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(BlockingIOError):
            sock.connect(address)
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


async def connect(
    host: str,
    port: int,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    offer_deflate: bool = True,
) -> WebSocket:
    """Open a TCP connection and upgrade it to a WebSocket at ``path``; with ``offer_deflate``
    the upgrade offers permessage-deflate as Chrome does, and the WebSocket speaks it if the
    server accepts.

    Raises:
        OSError: the TCP connection failed.
        HandshakeFailed: the server answered the upgrade with something other than 101, or
            accepted an extension that was not offered.
    """
    sock = await _open_socket(host, port)
    try:
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if offer_deflate:
            lines.append(f"Sec-WebSocket-Extensions: {CHROME_DEFLATE_OFFER}")
        lines += [f"{name}: {value}" for name, value in headers or ()]
        await _send_all(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        received = bytearray()
        while b"\r\n\r\n" not in received:
            if len(received) > _MAX_HEAD_BYTES:
                raise HandshakeFailed("upgrade answer too long")
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(_RECEIVE_BYTES)
            except BlockingIOError:
                continue
            if not data:
                raise HandshakeFailed("connection closed during the upgrade")
            received += data
        head, _, leftover = bytes(received).partition(b"\r\n\r\n")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        if status.split(" ")[1:2] != ["101"]:
            raise HandshakeFailed(status)
        answer = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if answer.get("sec-websocket-accept") != expected:
            raise HandshakeFailed("bad Sec-WebSocket-Accept")
        extensions = answer.get("sec-websocket-extensions")
        deflate = accept_extensions(extensions, offer_deflate)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, leftover, deflate, extensions)


class TrioWebSocket:
    """trio-websocket behind the same interface (``--client trio-websocket``, a cross-check)."""

    #: trio-websocket's received-message queue per connection.
    MESSAGE_QUEUE = 8
    MAX_MESSAGE_BYTES = 16 * 2**20

    def __init__(self, ws: Any, deflate: PerMessageDeflate | None = None) -> None:
        self._ws = ws
        self._deflate = deflate

    @property
    def extensions(self) -> str | None:
        deflate = self._deflate
        return repr(deflate) if deflate is not None and deflate.enabled() else None

    @classmethod
    async def connect(
        cls,
        nursery: trio.Nursery,
        host: str,
        port: int,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        *,
        offer_deflate: bool = True,
    ) -> TrioWebSocket:
        """Connect with trio-websocket (its reader task runs in ``nursery``); with
        ``offer_deflate`` the upgrade offers permessage-deflate as Chrome does.

        trio-websocket has no parameter for extensions, so this is its ``connect_websocket``
        with the one difference: the wsproto ``Request`` it sends carries the extension.
        """
        extra = [(k.encode(), v.encode()) for k, v in headers or ()]
        host_header = f"{host}:{port}"
        stream = await trio.open_tcp_stream(host, port)
        ws = WebSocketConnection(
            stream,
            WSConnection(ConnectionType.CLIENT),
            host=host_header,
            path=path,
            client_extra_headers=extra,
            message_queue_size=cls.MESSAGE_QUEUE,
            max_message_size=cls.MAX_MESSAGE_BYTES,
            receive_buffer_size=_RECEIVE_BYTES,
        )
        deflate = chrome_deflate() if offer_deflate else None
        if deflate is not None:
            ws._initial_request = Request(
                host=host_header, target=path, extensions=[deflate], extra_headers=extra
            )
        try:
            nursery.start_soon(ws._reader_task)
            await ws._open_handshake.wait()
        except HandshakeError as exc:
            raise HandshakeFailed(str(exc)) from None
        return cls(ws, deflate)

    async def send(self, message: bytes | str) -> None:
        try:
            await self._ws.send_message(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> bytes | str:
        try:
            message: bytes | str = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        return message

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason or None)


def _closed(exc: Any) -> Closed:
    reason = exc.reason
    if reason is None:
        return Closed(1006, "connection lost")
    return Closed(reason.code, reason.reason or "")
