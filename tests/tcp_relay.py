"""A TCP relay in front of a server, whose connections a test can cut: a network that drops.

The client sees its connection end with no WebSocket close frame (a browser reports 1006), the
server sees its peer gone, and both stay up: the next connection goes through as before.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define
class Relay:
    """Copies each connection to ``127.0.0.1:<port>`` both ways, to ``127.0.0.1:<target>``."""

    target: int
    port: int = 0
    _links: set[trio.CancelScope] = attrs.Factory(set)

    async def serve(
        self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on a free port (``port``), started once it listens; runs until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._link, listeners)

    def cut(self) -> None:
        """Close every connection open now, both of its sides, without a word to either."""
        for scope in self._links:
            scope.cancel()

    async def _link(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._links.add(scope)
            try:
                try:
                    server = await trio.open_tcp_stream("127.0.0.1", self.target)
                except OSError:  # the target refused it: the client's connection is closed
                    await client.aclose()
                    return
                async with client, server, trio.open_nursery() as nursery:
                    nursery.start_soon(_copy, client, server, nursery.cancel_scope)
                    nursery.start_soon(_copy, server, client, nursery.cancel_scope)
            finally:
                self._links.discard(scope)


async def _copy(source: trio.SocketStream, sink: trio.SocketStream, link: trio.CancelScope) -> None:
    """Copy until either side ends, then end the link (both sides are closed by its owner)."""
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    link.cancel()
