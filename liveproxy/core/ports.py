"""What a session needs of its two sockets: the seams between the session and the network.

:class:`~liveproxy.core.session.Session` knows the browser and Gemini only through these
``Protocol``\\ s, so its driver runs over Hypercorn and trio-websocket in production and over
memory channels in tests (``tests/core/test_session_driver.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias

import trio

if TYPE_CHECKING:
    from liveproxy.core.upstream import Connection, UpstreamTarget

Frame: TypeAlias = bytes | str


class BrowserPort(Protocol):
    """The browser's WebSocket, accepted."""

    async def receive(self) -> Frame:
        """The next frame. Raises ``BrowserGone`` when the browser left, ``MessageTooBig``
        when it sent a message over the limit."""
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame (binary for bytes); a no-op once the socket is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame once; later calls do nothing."""
        ...


class UpstreamSocket(Protocol):
    """One upstream WebSocket after its setup (trio-websocket's connection fits).

    ``get_message``, ``send_message`` and ``ping`` raise ``trio_websocket.ConnectionClosed``
    once it is closed.
    """

    async def get_message(self) -> bytes | str: ...

    async def send_message(self, message: bytes | str) -> None: ...

    async def ping(self, payload: bytes | None = None) -> None: ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...


class Connect(Protocol):
    """Opens one upstream connection through its setup (like ``upstream.open_connection``)."""

    def __call__(
        self,
        target: UpstreamTarget,
        setup: str,
        connect_scope: trio.CancelScope,
        *,
        on_open: Callable[[int], None],
    ) -> AbstractAsyncContextManager[Connection]: ...
