"""How a connection ends, as exceptions raised by whichever task decides it.

Every task of a connection raises one of these to end it; the connection's single boundary
(:mod:`liveproxy.emulator.connection`) catches them and performs the ending once.
"""

from __future__ import annotations

from typing import Literal

import attrs

EndedBy = Literal["server", "client", "dropped"]


class Ending(Exception):
    """Base class: the connection is over."""


@attrs.define(eq=False)
class Close(Ending):
    """The server closes with a close frame carrying ``code`` and ``reason``."""

    code: int
    reason: str


@attrs.define(eq=False)
class Drop(Ending):
    """The server drops the TCP connection without a close frame."""


@attrs.define(eq=False)
class PeerGone(Ending):
    """The WebSocket is already closed: by the client (``code`` from its close frame), by a
    dropped TCP connection (``code`` 1006), or by trio-websocket itself (1009, too big)."""

    code: int
    reason: str | None
    ended_by: EndedBy
