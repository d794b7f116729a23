"""What the session engine needs of its two sockets, and what they raise: the engine's seams.

The engine (:mod:`liveproxy.core`) knows the browser and Gemini only through these types. The
adapters implement them and translate their libraries' errors into these, once: the browser's
ASGI socket (:mod:`liveproxy.web.browser_socket`) and Gemini over trio-websocket
(:mod:`liveproxy.upstream`). Tests drive the engine over memory-channel fakes of the same
ports (``tests/core/test_session_driver.py``).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

import attrs
import trio

Frame: TypeAlias = bytes | str


class BrowserGone(Exception):
    """The browser closed its socket (or the connection dropped)."""


@attrs.define(eq=False)
class UpstreamClosed(Exception):
    """An upstream connection ended: Gemini's close code and reason (secrets removed); 1006
    when it dropped without a close frame or stopped answering pings."""

    code: int
    reason: str = ""


class BrowserPort(Protocol):
    """The browser's WebSocket, accepted."""

    async def receive(self) -> Frame:
        """The next frame.

        Raises:
            BrowserGone: the browser left.
            MessageTooBig, RateLimited: the browser sent a message over the size limit, or
                frames faster than its rate.
        """
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame (binary for bytes); a no-op once the socket is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame once; later calls do nothing."""
        ...


class UpstreamConnection(Protocol):
    """One upstream connection whose setup completed."""

    #: Gemini's answer to the setup (the connection's first message), as text.
    setup_complete: str

    async def receive(self) -> bytes | str:
        """The next message from Gemini.

        Raises:
            UpstreamClosed: the connection ended (before or while waiting).
        """
        ...

    async def send(self, message: str) -> None:
        """Send one message (a text frame).

        Raises:
            UpstreamClosed: the connection has ended.
        """
        ...

    async def aclose(self, code: int = 1000) -> None:
        """Close with ``code`` (gracefully if Gemini answers soon); the TCP connection and every
        task of the connection are gone on return, even when cancelled. Idempotent."""
        ...

    async def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame (a write to it is stuck): a
        write or read in flight fails with :class:`UpstreamClosed`. :meth:`aclose` still
        follows."""
        ...


class Upstream(Protocol):
    """Where a session's upstream connections go: Gemini (or the emulator, or a test's fake)."""

    @property
    def transparent(self) -> bool:
        """Whether its connections resume transparently (Vertex): every resumption handle then
        says which client message it includes last."""
        ...

    async def connect(
        self, nursery: trio.Nursery, setup: dict[str, Any], handle: str | None
    ) -> UpstreamConnection:
        """Open a connection with the browser's validated ``setup`` (resuming ``handle``), send
        it and wait for ``setupComplete``. The connection's tasks run in ``nursery`` until it
        is closed: the caller closes what it is given. Cancelling the call abandons the attempt
        and leaves nothing behind (the caller bounds it in time).

        Raises:
            UpstreamUnavailable: unreachable, refused with a retryable status, closed during the
                setup.
            UpstreamRejected: refused the credentials, the model or the setup.
            UpstreamFailed: answered the setup with something other than ``setupComplete``.
        """
        ...


@attrs.frozen
class ToolTerms:
    """What the engine needs to know of one server tool to run a call to it."""

    #: Seconds a call may take; then its task is cancelled and Gemini gets an error.
    timeout: float
    #: Whether the browser sees the call's arguments and result (else only names).
    mirror: bool = True


class ServerTools(Protocol):
    """The tools the server runs itself, bound to one session (its id, client and claims).

    Implemented by the web layer over :mod:`liveproxy.tools`."""

    def terms(self, name: str) -> ToolTerms | None:
        """How to run a call to ``name``; None when it is not a server tool (the browser's)."""
        ...

    async def invoke(self, name: str, args: dict[str, Any]) -> Any:
        """Run one call and return its result; cancellable (a thread is abandoned, not waited).

        Raises:
            Exception: whatever the tool raises (the engine answers Gemini with an error).
        """
        ...

    def finished(self, name: str, result: str, seconds: float) -> None:
        """Note how a call ended (``ok``, ``error``, ``timeout``, ``too_large``, ``cancelled``,
        ``busy``), for logs and metrics; never its arguments or result."""
        ...
