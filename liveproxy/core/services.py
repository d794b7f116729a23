"""What the server lends each session: configuration, the upstream, gauges, the shutdown event."""

from __future__ import annotations

import attrs
import trio

from liveproxy.config import Config
from liveproxy.core.ports import Connect
from liveproxy.core.stats import Gauges
from liveproxy.core.upstream import UpstreamTarget, open_connection


@attrs.define
class SessionServices:
    """What the server lends each session."""

    config: Config
    target: UpstreamTarget | None
    gauges: Gauges
    shutdown_now: trio.Event
    #: How upstream connections are opened (a test passes one over memory channels).
    connect: Connect = open_connection
