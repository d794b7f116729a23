"""What the app's routes share: the configuration, the state store and leases, the server's
tools, the draining flag, and what sessions are lent (limits, upstream, gauges, the shutdown
event)."""

from __future__ import annotations

import attrs
import trio

from liveproxy.config import Config
from liveproxy.core.prices import Prices
from liveproxy.core.services import SessionServices
from liveproxy.core.stats import Gauges
from liveproxy.store import StateStore
from liveproxy.tools import ToolRegistry
from liveproxy.web.budgets import Budgets
from liveproxy.web.leases import LeaseKeeper
from liveproxy.web.operator_records import RecordKeeper
from liveproxy.web.usage_log import UsageLog


@attrs.define(eq=False)
class ProxyState:
    """What the routes share. Gauges, the upstream and the shutdown event live once, in
    ``services``."""

    config: Config
    store: StateStore
    services: SessionServices
    leases: LeaseKeeper
    #: The tools the server runs itself (none unless configured).
    tools: ToolRegistry = attrs.field(factory=ToolRegistry.empty)
    draining: bool = False
    #: Where ended sessions' usage records go (``USAGE_LOG``; None: nowhere).
    usage_log: UsageLog | None = None
    #: The operator's prices (``PRICES_FILE``; None: no cost is claimed).
    prices: Prices | None = None
    #: Keeps ended sessions' usage records in the store (None: ``USAGE_RECORDS`` is off).
    records: RecordKeeper | None = None
    #: The budgets (``BUDGET_PER_CLIENT``, ``BUDGET_TOTAL``, the JWT claim; None: none).
    budgets: Budgets | None = None

    @property
    def gauges(self) -> Gauges:
        return self.services.gauges

    @property
    def shutdown_now(self) -> trio.Event:
        return self.services.shutdown_now
