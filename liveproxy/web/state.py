"""What the app's routes share: configuration, tokens, gauges, the upstream, shutdown flags."""

from __future__ import annotations

import attrs
import trio

from liveproxy.config import Config
from liveproxy.core.services import SessionServices
from liveproxy.core.stats import Gauges
from liveproxy.web.tokens import TokenStore


@attrs.define(eq=False)
class ProxyState:
    """What the routes share: tokens, the draining flag, and what sessions are lent.

    Configuration, gauges, the upstream and the shutdown event live once, in ``services``.
    """

    tokens: TokenStore
    services: SessionServices
    draining: bool = False

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def gauges(self) -> Gauges:
        return self.services.gauges

    @property
    def shutdown_now(self) -> trio.Event:
        return self.services.shutdown_now
