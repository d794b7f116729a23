"""What the server lends each session: the limits it keeps, the upstream, gauges, the shutdown
event. The engine sees these, never the whole configuration."""

from __future__ import annotations

import attrs
import trio

from liveproxy.config import Config
from liveproxy.contract.session_setup import SetupPolicy
from liveproxy.core.ports import Upstream
from liveproxy.core.stats import Gauges


@attrs.frozen(kw_only=True)
class SessionLimits:
    """The settings a session runs by."""

    #: For upstream to connect and answer ``setupComplete``, and for the browser's first frame.
    setup_timeout: float = 10.0
    #: Browser messages held while no upstream connection takes them.
    upstream_buffer_bytes: int = 256 * 1024
    reconnect_attempts: int = 3
    #: How long a conversation stays resumable after its socket (0: not resumable).
    resume_window: float = 60.0
    setup_policy: SetupPolicy = attrs.field(factory=lambda: SetupPolicy("gemini-3.8-live"))

    @classmethod
    def from_config(cls, config: Config) -> SessionLimits:
        return cls(
            setup_timeout=config.setup_timeout_seconds,
            upstream_buffer_bytes=config.upstream_buffer_bytes,
            reconnect_attempts=config.reconnect_attempts,
            resume_window=config.resume_window_seconds,
            setup_policy=SetupPolicy.from_config(config),
        )


@attrs.define(eq=False)
class SessionServices:
    """What the server lends each session."""

    limits: SessionLimits
    #: Where the session's connections go (None: nowhere, every session fails).
    upstream: Upstream | None
    gauges: Gauges
    shutdown_now: trio.Event
