"""Upstream keepalive: a connection that stops answering pings counts as dropped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection


async def keep_alive(
    ws: WebSocketConnection,
    interval: float,
    pong_timeout: float,
    no_pong: Callable[[], Awaitable[None]],
) -> None:
    """Ping ``ws`` every ``interval``; a pong later than ``pong_timeout`` calls ``no_pong``.

    Gemini's pongs can take 8-30 s, so callers give a generous timeout. Returns when the
    connection closes (its reader sees the close itself), or after ``no_pong``.
    """
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(pong_timeout):
            try:
                await ws.ping()
            except ConnectionClosed:
                return
            continue
        await no_pong()
        return
