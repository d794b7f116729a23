"""Fixes for Hypercorn 0.18.0 (pinned in pyproject): no client can end the server or other sessions.

Each fix is a subclass that :func:`install` puts where Hypercorn looks its class up by name; drop
a fix when Hypercorn ships the upstream fix named beside it (``tests/web/test_hostile_input.py``
has a test that fails without each).

1. **Isolation** (:class:`IsolatedTCPServer`). An exception escaping one connection's handler
   ends ``trio.serve_listeners`` and with it the whole server (Hypercorn has no per-connection
   net). Here it is logged once, by type and without content, and only that connection closes.
   Its ``_close`` also stops racing a write in flight (see :meth:`IsolatedTCPServer._close`).
2. **Data before the 101** (:meth:`GuardedWSStream.handle`). Hypercorn answers 400, but the
   app's accept, racing that answer, sends a 101 into the same h11 connection, which then
   raises ``LocalProtocolError`` out of the handler. The stream is marked closed *before* the
   400, so the racing accept is dropped; the app is told the client left.
3. **Messages over the size limit** (:class:`BoundedMessageBuffer`,
   :meth:`GuardedWSStream._handle_events`). Hypercorn keeps its buffer after
   ``FrameTooLargeError``; the next message of the other type is written into it and
   ``StringIO.write(bytes)`` raises ``TypeError`` out of the handler. Here the buffer is
   cleared, it counts text in UTF-8 bytes and refuses *before* it grows past the limit, the rest
   of that message is discarded unread, and the app gets :data:`MESSAGE_TOO_BIG` (so the session
   can answer with its ``error`` and close 1009).
4. **Protocol errors in the client's frames** (invalid UTF-8, bad opcodes, ...). wsproto
   reports them as a ``CloseConnection`` event while the connection is still open; Hypercorn
   then drops the TCP connection without a close frame. Here the client gets the close frame
   wsproto chose (1007 for invalid UTF-8, 1002 for framing errors).
5. **Events for an app that has finished** (:class:`AppTaskGroup`). Hypercorn feeds each app
   through a bounded channel; once the app has returned nobody reads it, so a client that
   keeps sending (a WebSocket flood, the rest of a refused body) blocks Hypercorn's reader, and
   with it the connection's close, forever: its socket and task leak. Here the channel is
   closed when the app returns and later events are dropped.
6. **permessage-deflate off** unless the Hypercorn config says ``ws_compression = True``:
   Hypercorn always accepts a browser's offer (there is no setting), and wsproto inflates
   without a bound (a small frame can inflate to gigabytes before any size check). The offer
   is removed from the request before Hypercorn reads it.
7. **Every frame counts** (:meth:`GuardedWSStream._handle_events`): data frames, continuation
   frames (empty ones too) and control frames (pings, unsolicited pongs) each take a token
   from the connection's bucket of ``ws_frame_rate`` a second (Hypercorn counts nothing; an
   empty continuation frame adds no bytes to any size limit). Past it the app is told once
   (:data:`RATE_LIMITED`, so the session can answer ``rate_limited`` and close 1008) and the
   connection is read no further until the stream closes: what the client sent after is never
   parsed (wsproto parses ~80 000 empty frames a second on one core, so a flood parsed to the
   end, even to drop it, would stall the worker), and its sends back up into its own socket.
8. **HTTP/1.1 only** (:class:`Http11Only`). Hypercorn serves HTTP/2 over cleartext on the plain
   port, to a prior-knowledge preface or an ``Upgrade: h2c`` request, and its HTTP/2 path
   leaks a connection whose flow-control window never opens. No browser or nginx needs h2c
   to reach liveproxy: the preface is answered 505 and the connection closed, and an
   ``Upgrade: h2c`` is ignored (RFC 9110 7.8 lets a server do so): the request is answered
   in HTTP/1.1.
9. **Messages queued for an app, in bytes** (:class:`AppQueue`). Hypercorn's channel to the app
   holds ``max_app_queue_size`` (10) events whatever their size: ten messages of
   ``MAX_MESSAGE_BYTES`` each (20 MiB) for an app that reads none, such as a session whose
   upstream stalled. Here the ``websocket.receive`` messages queued for an app take at most
   ``websocket_max_message_size`` bytes together (one message over it only in an empty queue),
   other events only their place among the ten. A message that does not fit waits in Hypercorn's
   reader of that connection, so the client's sends back up into its own socket; once the app
   has returned it is dropped (fix 5).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import attrs
import h11
import hypercorn.config
import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.trio.run
import hypercorn.trio.tcp_server
import trio
from hypercorn.events import Closed
from hypercorn.protocol.events import Body, Data, Event, Request, StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer, WSStream
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage

from liveproxy.bucket import TokenBucket
from liveproxy.web.browser_socket import MESSAGE_TOO_BIG, RATE_LIMITED

log = logging.getLogger("liveproxy.connections")

_ABNORMAL: Final = 1006
#: How long closing a connection waits for a write in flight (a client that stopped reading).
CLOSE_WAIT_SECONDS: Final = 1.0


class IsolatedTCPServer(TCPServer):
    """Hypercorn's per-connection handler; a failure in it ends this connection only.

    Raises nothing but ``Cancelled`` (server shutdown): any other exception is logged (its type,
    never the data that caused it) and the connection's socket is closed.
    """

    async def run(self) -> None:
        try:
            await super().run()
        except Exception as exc:  # the net under one connection, by design
            _log_failure(exc)
        except BaseExceptionGroup as group:
            cancelled, failures = group.split(trio.Cancelled)
            if failures is not None:
                _log_failure(failures)
            if cancelled is not None:
                raise cancelled from None
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _close(self) -> None:
        """Close the stream; a write in flight in another task gets to finish first (bounded).

        Hypercorn sends EOF without its send lock, racing another task's write: trio raised
        ``BusyResourceError`` in that write (the app's answer) and the connection stayed open.
        """
        try:
            if self.send_lock.statistics().owner is not trio.lowlevel.current_task():
                with trio.move_on_after(CLOSE_WAIT_SECONDS):
                    async with self.send_lock:
                        await super()._close()
        finally:
            await trio.aclose_forcefully(self.stream)


def _log_failure(exc: BaseException) -> None:
    leaves = _leaf_types(exc)
    log.error("a client connection failed and was closed: %s", ", ".join(leaves))
    log.debug("connection failure detail", exc_info=exc)


def _leaf_types(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [name for inner in exc.exceptions for name in _leaf_types(inner)]
    return [f"{type(exc).__module__}.{type(exc).__qualname__}"]


class AppTaskGroup(TaskGroup):
    """Hypercorn's per-connection task group; each app is fed through an :class:`AppQueue`."""

    async def spawn_app(
        self,
        app: AppWrapper,
        config: hypercorn.config.Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        queue = AppQueue(config.max_app_queue_size, config.websocket_max_message_size)

        async def app_then_close(*args: Any) -> None:
            try:
                await app(*args)
            finally:
                queue.close()  # before Hypercorn's own cleanup, which may feed the app

        assert self._nursery is not None
        self._nursery.start_soon(
            _handle,
            cast(AppWrapper, app_then_close),
            config,
            scope,
            queue.get,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return queue.put


def message_bytes(event: ASGIReceiveEvent) -> int:
    """The memory a ``websocket.receive`` event's message takes (0 for any other event)."""
    if event["type"] != "websocket.receive":
        return 0
    message = event.get("bytes") or event.get("text")
    return sys.getsizeof(message) if message else 0


@attrs.define(eq=False)
class AppQueue:
    """The events Hypercorn has read for one app and the app has not received (fixes 5, 9).

    At most ``max_events`` events, whose ``websocket.receive`` messages take at most
    ``max_bytes`` together (:func:`message_bytes`), unless one alone takes more. :meth:`get`
    is the app's ``receive``, :meth:`put` Hypercorn's; once the app has returned
    (:meth:`close`), events put, and any put waiting for room, are dropped.
    """

    max_events: int
    max_bytes: int
    #: The bytes of the messages in the queue.
    queued_bytes: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _room: trio.Event = attrs.field(factory=trio.Event, init=False)  # set when bytes leave
    _to_app: trio.MemorySendChannel[ASGIReceiveEvent] = attrs.field(init=False)
    _from_hypercorn: trio.MemoryReceiveChannel[ASGIReceiveEvent] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        channel = trio.open_memory_channel[ASGIReceiveEvent](self.max_events)
        self._to_app, self._from_hypercorn = channel

    async def put(self, event: ASGIReceiveEvent) -> None:
        """Queue ``event`` once there is room for it (in events, and in bytes for a message)."""
        size = message_bytes(event)
        while size and self.queued_bytes and self.queued_bytes + size > self.max_bytes:
            if self._closed:
                return
            await self._room.wait()
        self.queued_bytes += size
        try:
            await self._to_app.send(event)
        except trio.BrokenResourceError:  # the app returned: nobody reads
            self._release(size)
        except BaseException:  # cancelled: the event was not queued
            self._release(size)
            raise

    async def get(self) -> ASGIReceiveEvent:
        event = await self._from_hypercorn.receive()
        self._release(message_bytes(event))
        return event

    def close(self) -> None:
        """The app has returned: nothing more is received, what is put is dropped."""
        self._closed = True
        self._from_hypercorn.close()
        self._room.set()

    def _release(self, size: int) -> None:
        if size:
            self.queued_bytes -= size
            if self._room.statistics().tasks_waiting:  # a new Event only when a put waits
                self._room.set()
                self._room = trio.Event()


class Http11Only(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, which never hands a connection to HTTP/2 (fix 8)."""

    _refused_http2 = False

    async def _check_protocol(self, event: h11.Request) -> None:
        # Hypercorn's own check switches to HTTP/2 here; an ``Upgrade: h2c`` is ignored.
        if event.method == b"PRI" and event.target == b"*":
            self._refused_http2 = True

    async def _create_stream(self, request: h11.Request) -> None:
        if self._refused_http2:
            await self._send_error_response(505)
            await self.send(Closed())
            return
        await super()._create_stream(request)


#: Characters that take 2 (then 4) bytes each in a ``str``: once one is in a text message,
#: every character of it does.
_WIDE: Final = re.compile("[\u0100-\U0010ffff]")
_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")


def _char_bytes(text: str) -> int:
    """The bytes each character of a ``str`` holding ``text`` takes: 1, 2 or 4."""
    if text.isascii() or not _WIDE.search(text):
        return 1
    return 4 if _ASTRAL.search(text) else 2


class BoundedMessageBuffer(WebsocketBuffer):
    """One incoming message, never more than ``max_length`` bytes: binary by its length, text by
    the larger of its UTF-8 length and what its characters take in memory (1, 2 or 4 bytes
    each, the widest deciding: a text with one emoji takes 4 bytes a character).

    Raises ``FrameTooLargeError`` before appending a part that would pass the limit, and is
    empty afterwards.
    """

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self._chars = 0
        self._char_bytes = 1

    def extend(self, event: Message[Any]) -> None:
        data = event.data
        if isinstance(event, TextMessage):
            utf8 = self.length + len(data.encode("utf-8"))
            chars = self._chars + len(data)
            width = max(self._char_bytes, _char_bytes(data))
            size = max(utf8, chars * width)
        else:
            size = self.length + len(data)
        if size > self.max_length:
            self.clear()
            raise FrameTooLargeError()
        super().extend(event)
        if isinstance(event, TextMessage):
            self.length, self._chars, self._char_bytes = utf8, chars, width

    def clear(self) -> None:
        super().clear()
        self._chars = 0
        self._char_bytes = 1


class GuardedWSStream(WSStream):
    """Hypercorn's WebSocket stream with fixes 2-5 of this module."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = BoundedMessageBuffer(self.config.websocket_max_message_size)
        self._discarding = False
        rate = getattr(self.config, "ws_frame_rate", 0)
        self._frames = TokenBucket(rate, capacity=rate) if rate else None
        self._stream_closed = trio.Event()

    async def handle(self, event: Event) -> None:
        if isinstance(event, StreamClosed):
            self._stream_closed.set()
        if isinstance(event, Request) and not getattr(self.config, "ws_compression", False):
            headers = [h for h in event.headers if h[0].lower() != b"sec-websocket-extensions"]
            event = dataclasses.replace(event, headers=headers)
        elif isinstance(event, Body | Data) and not self.closed and not self.handshake.accepted:
            self.closed = True  # first: the app's accept, racing the 400, must be dropped
            await self._send_error_response(400)
            await self.send(StreamClosed(stream_id=self.stream_id))
            await self._to_app({"type": "websocket.disconnect", "code": _ABNORMAL})
            return
        await super().handle(event)

    async def _handle_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, Message | Ping | Pong) and not await self._within_rate(event):
                await self._stream_closed.wait()  # nothing more is read from this client
                return
            if isinstance(event, Message):
                await self._handle_message(event)
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                elif self.connection.state == ConnectionState.OPEN:
                    # wsproto refused the client's frames and chose this close code.
                    await self._send_wsproto_event(event)
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def _within_rate(self, event: Message[Any] | Ping | Pong) -> bool:
        """Count ``event``'s frame (once, at its end); False when it is over the rate: the
        app has then been told, and the frame is dropped."""
        if self._frames is None or (isinstance(event, Message) and not event.frame_finished):
            return True
        if not self._frames.take(trio.current_time()):
            return True
        self.buffer.clear()
        await self._to_app({"type": "websocket.receive", "bytes": None, RATE_LIMITED: True})
        return False

    async def _handle_message(self, event: Message[Any]) -> None:
        if self._discarding:  # the rest of a message over the limit
            self._discarding = not event.message_finished
            return
        try:
            self.buffer.extend(event)
        except FrameTooLargeError:
            self._discarding = not event.message_finished
            await self._to_app({"type": "websocket.receive", "bytes": None, MESSAGE_TOO_BIG: True})
            return
        if event.message_finished:
            await self._to_app(self.buffer.to_message())
            self.buffer.clear()

    async def _to_app(self, message: dict[str, Any]) -> None:
        if self.app_put is not None:
            await self.app_put(message)


def install() -> None:
    """Put the fixed classes where Hypercorn 0.18.0 looks them up (idempotent)."""
    setattr(hypercorn.trio.run, "TCPServer", IsolatedTCPServer)  # noqa: B010
    setattr(hypercorn.protocol, "H11Protocol", Http11Only)  # noqa: B010
    setattr(hypercorn.trio.tcp_server, "TaskGroup", AppTaskGroup)  # noqa: B010
    setattr(hypercorn.protocol.h11, "WSStream", GuardedWSStream)  # noqa: B010
    setattr(hypercorn.protocol.h2, "WSStream", GuardedWSStream)  # noqa: B010
