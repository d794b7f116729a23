"""Upstream keepalive: a connection that stops answering pings counts as dropped."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed

from liveproxy.core.ports import UpstreamSocket


async def keep_alive(
    ws: UpstreamSocket, interval: float, pong_timeout: float, reading: trio.CancelScope
) -> None:
    """Ping ``ws`` every ``interval``; a pong later than ``pong_timeout`` cancels ``reading``.

    Gemini's pongs can take 8-30 s, so callers give a generous timeout. Returns when the
    connection closes (the reader sees the close itself); cancelled with the reader's nursery.
    """
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(pong_timeout):
            try:
                await ws.ping()
            except ConnectionClosed:
                return
            continue
        reading.cancel()
        return
