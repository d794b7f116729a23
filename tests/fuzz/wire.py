"""Bytes on a blocking socket: an RFC 6455 frame encoder, HTTP/1.1 helpers, a small WS client.

Written by hand on purpose: the fuzz suite must be able to say things a correct library refuses
to say (reserved opcodes and bits, unmasked client frames, non-minimal lengths, lengths that lie).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

#: RFC 6455 opcodes.
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x00\x00\x00\x00",
    length_form: str = "min",
    declared_length: int | None = None,
) -> bytes:
    """One WebSocket frame, exactly as asked (``mask=None``: unmasked).

    ``length_form`` is ``min`` (what RFC 6455 requires), ``16`` or ``64`` (the longer encodings,
    non-minimal for short payloads); ``declared_length`` lies about the payload's length.
    """
    length = len(payload) if declared_length is None else declared_length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if mask is not None else 0
    if length_form == "64" or length > 0xFFFF:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    elif length_form == "16" or length > 125:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | length])
    if mask is None:
        return head + payload
    return head + mask + apply_mask(payload, mask)


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    if not payload or mask == b"\x00\x00\x00\x00":
        return payload
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def ws_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def upgrade_request(
    path: str, host: str, key: bytes | None = None, origin: str | None = None
) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Origin: {origin}\r\n" if origin is not None else "")
        + f"Sec-WebSocket-Key: {(key or ws_key()).decode()}\r\n\r\n"
    ).encode()


def connect(port: int, timeout: float = 3.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False when the server closed, reset or stopped reading (that is allowed)."""
    try:
        sock.sendall(data)
    except OSError:  # includes a send timeout: a server may stop reading a hostile client
        return False
    return True


def read_for(
    sock: socket.socket, *, idle: float = 0.2, total: float = 2.0, limit: int = 1 << 22
) -> tuple[bytes, bool]:
    """What the server sends until it closes, goes quiet for ``idle`` s, or ``total`` s pass.

    Returns the bytes and whether the server closed (EOF or reset). Keeps at most ``limit``
    bytes (the rest is read and dropped, so a chatty server cannot block on us).
    """
    chunks: list[bytes] = []
    kept = 0
    end = time.monotonic() + total
    while (now := time.monotonic()) < end:
        sock.settimeout(min(idle, end - now))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except OSError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        if kept < limit:
            chunks.append(chunk)
            kept += len(chunk)
    return b"".join(chunks), False


def read_head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Bytes up to the end of the response head (or all there was, if it closed or timed out)."""
    data = b""
    end = time.monotonic() + timeout
    while b"\r\n\r\n" not in data and (remaining := end - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def close_socket(sock: socket.socket, how: str) -> None:
    """Close the example's connection: ``rst`` (SO_LINGER 0), ``half`` (FIN first) or ``close``."""
    try:
        if how == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half":
            sock.shutdown(socket.SHUT_WR)
            read_for(sock, idle=0.2, total=1.0)
    except OSError:
        pass
    finally:
        sock.close()


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the rest, of one HTTP/1.1 response head."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no complete response head in {data[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def http_json(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[int, Any]:
    """One well-formed request and its JSON answer (read by its Content-Length, not to EOF)."""
    sock = connect(port)
    try:
        request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        request += "".join(f"{name}: {value}\r\n" for name, value in headers)
        if body is not None:
            request += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        sock.sendall(request.encode() + b"\r\n" + (body or b""))
        status, answer_headers, rest = split_response(read_head(sock))
        length = int(answer_headers.get("content-length", "0"))
        deadline = time.monotonic() + 10
        while len(rest) < length and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    finally:
        sock.close()
    return status, json.loads(rest[:length]) if length else None


def token(port: int, headers: tuple[tuple[str, str], ...] = ()) -> str:
    status, answer = http_json(port, "POST", "/api/auth", headers=headers)
    assert status == 200, (status, answer)
    value: str = answer["session_token"]
    return value


class WebSocketClosed(Exception):
    """The server closed the WebSocket (close frame or EOF); ``payload``: the close frame's."""

    def __init__(self, message: str, payload: bytes | None = None) -> None:
        super().__init__(message)
        self.payload = payload


class BlockingWebSocket:
    """A minimal, correct client WebSocket on a blocking socket (answers pings)."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self._buffer = bytearray(buffered)

    @classmethod
    def open(
        cls, port: int, path: str, timeout: float = 10.0, origin: str | None = None
    ) -> BlockingWebSocket:
        sock = connect(port, timeout)
        try:
            sock.sendall(upgrade_request(path, f"127.0.0.1:{port}", origin=origin))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise WebSocketClosed(f"closed during the handshake: {data!r}")
                data += chunk
            status, _, rest = split_response(data)
            if status != 101:
                raise WebSocketClosed(f"handshake answered {status}: {data!r}")
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(encode_frame(opcode, payload, mask=os.urandom(4)))

    def send_json(self, message: Any) -> None:
        self.send(TEXT, json.dumps(message).encode())

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete frame from the server in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed("EOF")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def recv(self, timeout: float) -> tuple[int, bytes]:
        """The next data message (opcode, payload), reassembled."""
        deadline = time.monotonic() + timeout
        parts: list[bytes] = []
        message_opcode = 0
        while True:
            b0, b1 = self._read_exact(2, deadline)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read_exact(2, deadline))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read_exact(8, deadline))
            mask = self._read_exact(4, deadline) if b1 & 0x80 else None
            payload = self._read_exact(length, deadline)
            if mask is not None:
                payload = apply_mask(payload, mask)
            opcode = b0 & 0xF
            if opcode == PING:
                self.send(PONG, payload)
            elif opcode == CLOSE:
                raise WebSocketClosed(f"close frame {payload!r}", payload)
            elif opcode != PONG:
                if opcode != CONTINUATION:
                    message_opcode = opcode
                parts.append(payload)
                if b0 & 0x80:
                    return message_opcode, b"".join(parts)

    def close(self) -> None:
        try:
            self.send(CLOSE, close_payload(1000))
        except OSError:
            pass
        finally:
            self.sock.close()


TEXT_SETUP: dict[str, Any] = {"setup": {"generation_config": {"response_modalities": ["TEXT"]}}}


class Bystander:
    """A real session through the proxy that must keep getting answers while it is fuzzed
    (``headers``: its sign-in's, e.g. a JWT)."""

    def __init__(self, port: int, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.turns = 0
        self.ws = BlockingWebSocket.open(port, f"/ws?token={token(port, headers)}")
        try:
            self.ws.send_json(TEXT_SETUP)
            while True:
                opcode, payload = self.ws.recv(timeout=15.0)
                if opcode == TEXT and "setupComplete" in json.loads(payload):
                    break
        except BaseException:
            self.ws.sock.close()
            raise

    def turn(self, timeout: float = 15.0) -> None:
        """Send ``ping N`` and wait for the answer's ``turnComplete`` (the emulator echoes it)."""
        self.turns += 1
        text = f"ping-{self.turns}"  # one word: the emulator answers in 3 words
        self.ws.send_json({"type": "text", "text": text})
        deadline = time.monotonic() + timeout
        said: list[str] = []
        while True:
            opcode, payload = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            if opcode != TEXT:
                continue
            content = json.loads(payload).get("serverContent", {})
            for part in content.get("modelTurn", {}).get("parts", []):
                said.append(part.get("text", ""))
            if content.get("turnComplete"):
                answer = "".join(said)
                assert text in answer, f"the bystander asked {text!r}, got {answer!r}"
                return

    def close(self) -> None:
        self.ws.close()
