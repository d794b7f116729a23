"""What the app's routes share: configuration, tokens, gauges, the upstream, shutdown flags."""

from __future__ import annotations

import attrs
import trio

from liveproxy.config import Config
from liveproxy.session import SessionServices
from liveproxy.stats import Gauges
from liveproxy.tokens import TokenStore


@attrs.define(eq=False)
class ProxyState:
    """What the routes share: configuration, tokens, gauges, the upstream and shutdown flags."""

    config: Config
    tokens: TokenStore
    gauges: Gauges
    services: SessionServices
    draining: bool = False

    @property
    def shutdown_now(self) -> trio.Event:
        return self.services.shutdown_now
