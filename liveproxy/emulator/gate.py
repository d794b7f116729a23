"""A stream wrapper that can stall (stop all I/O) and that notices the peer going away."""

from __future__ import annotations

import trio


class GatedStream(trio.abc.Stream):
    """Wraps the connection's TCP (or TLS) stream underneath trio-websocket.

    After :meth:`stall`, ``send_all`` and ``receive_some`` block until the stream is closed:
    the emulator neither reads nor writes, not even pongs. ``finished`` is set once the stream
    can carry nothing more: a read saw end-of-file or a broken connection, or it was closed.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self._unread = b""
        self._closed = trio.Event()
        self.finished = trio.Event()
        self.stalled = False

    def stall(self) -> None:
        """Stop reading and writing, for good."""
        self.stalled = True

    async def _gate(self) -> None:
        if self.stalled:
            await self._closed.wait()
            raise trio.ClosedResourceError("stalled stream closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._gate()
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._gate()
        await self._inner.wait_send_all_might_not_block()

    def unread(self, data: bytes) -> None:
        """Give ``data`` (read too early) back: the next reads return it first."""
        self._unread = data + self._unread

    async def peek_line(self, limit: int) -> bytes:
        """The first line (up to ``limit`` bytes, without reading further), left unread.

        Returns what came before end-of-file or a break if no line came."""
        data = b""
        while b"\n" not in data and len(data) < limit:
            try:
                chunk = await self.receive_some(limit - len(data))
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += bytes(chunk)
        self.unread(data)
        return data.partition(b"\n")[0]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self._gate()
        if self._unread:
            size = len(self._unread) if max_bytes is None else max_bytes
            unread, self._unread = self._unread[:size], self._unread[size:]
            return unread
        try:
            data = await self._inner.receive_some(max_bytes)
        except trio.BrokenResourceError:
            self.finished.set()
            raise
        if not data:
            self.finished.set()
        return data

    async def aclose(self) -> None:
        """Close gracefully (TLS sends close_notify); blocked stalled calls fail."""
        self._closed.set()
        self.finished.set()
        await self._inner.aclose()

    async def drop(self) -> None:
        """Close at once, without any goodbye at any layer."""
        self._closed.set()
        self.finished.set()
        await trio.aclose_forcefully(self._inner)
